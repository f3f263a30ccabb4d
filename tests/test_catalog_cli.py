"""``nspv2 install / uninstall / enable / disable / catalog`` and ``serve``'s
refusal of a provider that is not installed.

Two halves:

* the commands as a user runs them: child processes started from a folder
  outside the checkout, on the native host's catalog file (each test's own,
  NSPV2_CATALOG from conftest);
* Windows faked: ``sys.platform`` is "win32", ``ctypes.WinDLL("ws2_32")``
  returns :class:`FakeWs2_32`, whose functions are Python callables reached
  through C function pointers of the real prototypes (so the arguments are
  marshalled as for ws2_32.dll), recording every call: not elevated, the
  command says to run elevated; ``--wow64`` calls the ``*32`` functions;
  ``WSAEnumNameSpaceProvidersExW``'s packed entries are read back.
"""

from __future__ import annotations

import ctypes
import json
import os
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nspv2.examples.email import EMAIL_PROVIDER_ID
from nspv2.sdk.guiddef import GUID
from nspv2.sdk.nsemail import DomainDescription, InstallationBlob
from nspv2.sdk.winsock2 import BLOB, NS, SOCKET_ERROR, WSANAMESPACE_INFOEXW, WSAError
from nspv2.sdk.wintypes import LPWSTR
from nspv2.tools import cli

from .clirun import nspv2_cli
from .nativebuild import NativeLib, email_provider, native_lib

__all__ = ["native_lib"]  # the fixture, imported for this module's tests

EMAIL = "nspv2.examples.email:EmailDirectory"
#: The C email example's provider id (native_stub/src/ref_provider.c's nspv2_ref_provider_id).
NATIVE_ID = uuid.UUID("6e737032-7265-4600-8a1f-5245464e5350")
EFAULT = int(WSAError.WSAEFAULT)
EACCES = int(WSAError.WSAEACCES)
NOT_INITIALISED = int(WSAError.WSANOTINITIALISED)


def field(label: str, value: object) -> str:
    """One line of ``nspv2 catalog``'s entries."""
    return f"{label + ':':<20}{value}"


# -- the commands, as a user runs them ---------------------------------------------------


def catalog_json(env: dict[str, str] | None = None) -> dict[str, Any]:
    out = nspv2_cli("catalog", "--json", env=env)
    assert out.returncode == 0, out
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def test_install_catalog_disable_enable_uninstall(catalog_path: Path) -> None:
    out = nspv2_cli("install", EMAIL, "--domain", "example.com", "--domain", "example.net")
    assert out.returncode == 0, out
    assert f"{{{EMAIL_PROVIDER_ID}}}" in out.stdout and str(catalog_path) in out.stdout
    assert catalog_path.is_file()

    text = nspv2_cli("catalog")
    assert text.returncode == 0, text
    for words in (
        field("Description", "nspv2 e-mail presence"),
        field("Provider ID", f"{{{str(EMAIL_PROVIDER_ID).upper()}}}"),
        field("Name Space", "37 (NS_EMAIL)"),
        field("Active", 1),
        field("Version", 1),
        field("Provider Type", "application"),
        field("Wildcard", "no"),
        "  example.com  primary",
        "  example.net  primary",
        f"1 namespace provider in the namespace catalog at {catalog_path}",
    ):
        assert words in text.stdout, (words, text.stdout)

    doc = catalog_json()
    assert doc["location"] == str(catalog_path)
    [entry] = doc["providers"]
    assert entry["provider_id"] == str(EMAIL_PROVIDER_ID)
    assert entry["identifier"] == "nspv2 e-mail presence"
    assert entry["namespace"] == 37 and entry["active"] is True and entry["version"] == 1
    assert entry["installation_blob"] == {
        "provider_type": "application",
        "wildcard": False,
        "domains": [
            {"name": "example.com", "level": "primary"},
            {"name": "example.net", "level": "primary"},
        ],
    }
    assert entry["blob_problems"] == []

    # by class, then by GUID (with and without braces)
    assert nspv2_cli("disable", EMAIL).returncode == 0
    assert catalog_json()["providers"][0]["active"] is False
    assert nspv2_cli("enable", f"{{{EMAIL_PROVIDER_ID}}}").returncode == 0
    assert catalog_json()["providers"][0]["active"] is True
    gone = nspv2_cli("uninstall", str(EMAIL_PROVIDER_ID), "--json")
    assert gone.returncode == 0, gone
    assert json.loads(gone.stdout)["uninstalled"] == [str(EMAIL_PROVIDER_ID)]
    assert catalog_json()["providers"] == []


def test_installing_twice_says_so_and_exits_1(catalog_path: Path) -> None:
    assert nspv2_cli("install", EMAIL).returncode == 0  # its own blob
    before = catalog_path.read_bytes()
    again = nspv2_cli("install", EMAIL, "--domain", "example.com")
    assert again.returncode == 1, again
    [line] = again.stderr.strip().splitlines()
    assert "already installed" in line and "WSANO_RECOVERY" in line, line
    assert f"nspv2 uninstall {EMAIL_PROVIDER_ID}" in line and str(catalog_path) in line
    assert catalog_path.read_bytes() == before
    # the first install's own blob: example.com and example.org, primary
    [entry] = catalog_json()["providers"]
    names = [d["name"] for d in entry["installation_blob"]["domains"]]
    assert names == ["example.com", "example.org"]


def test_levels_and_wildcard_build_the_blob(catalog_path: Path) -> None:
    out = nspv2_cli(
        "install", EMAIL, "--domain", "example.com", "--level", "secondary", "--wildcard", "--json"
    )
    assert out.returncode == 0, out
    done = json.loads(out.stdout)["installed"][0]
    expected = InstallationBlob(
        level=1, wildcard=True, domains=[DomainDescription("example.com", 1)]
    ).pack()
    assert bytes.fromhex(done["blob"]) == expected
    [entry] = catalog_json()["providers"]
    assert bytes.fromhex(entry["blob"]) == expected
    assert entry["installation_blob"]["wildcard"] is True


NO_BLOB_PROVIDERS = textwrap.dedent(
    """
    import uuid
    from nspv2 import NS, Provider


    class Bare(Provider):
        provider_id = uuid.UUID("aaaaaaaa-0000-4000-8000-00000000ca01")

        def lookup(self, session, q, flags):
            return []


    class Dns(Provider):
        provider_id = uuid.UUID("aaaaaaaa-0000-4000-8000-00000000ca02")
        namespace = NS.NS_DNS
        name = "dns here"

        def lookup(self, session, q, flags):
            return []
    """
)


@pytest.mark.parametrize(
    "args, words",
    [
        (["install", "bare_providers:Bare"], "--domain D"),
        (["install", "bare_providers:Dns", "--domain", "example.com"], "NS_DNS"),
        (["install", EMAIL, "--level", "secondary"], "--level applies"),
        (["install", EMAIL, "--domain", ""], "empty name"),
        (["install"], "give the provider"),
        (["install", EMAIL, "--native", "x.so"], "not both"),
        (["uninstall"], "or its GUID"),
        (["install", EMAIL, "--wow64"], "Windows"),
        (["catalog", "--wow64"], "Windows"),
        (["install", "--native", "no/such/lib.so"], "no such file"),
        (["disable", "no_such_module_xyz:Thing"], "no_such_module_xyz"),
        (["uninstall", "not-a-guid"], "neither a GUID, MODULE:CLASS nor a .py file"),
        (["install", "not-a-guid"], "neither a GUID, MODULE:CLASS nor a .py file"),
        (["install", EMAIL, "--domain", "."], "empty name"),
        (["install", EMAIL, "--domain", "alice@example.com"], "'@'"),
        (["install", EMAIL, "--domain", "example .com"], "whitespace"),
        (["install", EMAIL, "--domain", "example.com\t"], "whitespace"),
        (
            [
                "install",
                EMAIL,
                "--domain",
                "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62,
            ],
            "longer than 253",
        ),
        (["install", EMAIL, "--domain", "x" * 64 + ".com"], "more than 63"),
        (["install", EMAIL, "--domain", "example.com", "--domain", "Example.COM."], "twice"),
        (["install", EMAIL, "--domain", "example.com.", "--domain", "EXAMPLE.com"], "twice"),
        # a GUID alone: --namespace is needed, NS_EMAIL needs domains or --wildcard
        (["install", "aaaaaaaa-0000-4000-8000-00000000ca09"], "--namespace N"),
        (
            ["install", "aaaaaaaa-0000-4000-8000-00000000ca09", "--namespace", "NS_EMAIL"],
            "--domain D",
        ),
        (
            ["install", "aaaaaaaa-0000-4000-8000-00000000ca09", "--namespace", "NS_NOPE"],
            "neither a number nor a namespace name",
        ),
        (
            ["install", "aaaaaaaa-0000-4000-8000-00000000ca09", "--namespace", "4294967296"],
            "outside",
        ),
        (["install", EMAIL, "--namespace", "12"], "named by its GUID"),
        (["install", EMAIL, "--name", "x"], "named by its GUID"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, catalog_path: Path, args: list[str], words: str
) -> None:
    (tmp_path / "bare_providers.py").write_text(NO_BLOB_PROVIDERS)
    out = nspv2_cli(*args, cwd=tmp_path)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], out.stderr
    assert not catalog_path.exists()


def test_a_provider_of_another_namespace_installs_without_a_blob(
    tmp_path: Path, catalog_path: Path
) -> None:
    (tmp_path / "bare_providers.py").write_text(NO_BLOB_PROVIDERS)
    out = nspv2_cli("install", "bare_providers:Dns", cwd=tmp_path)
    assert out.returncode == 0, out
    [entry] = catalog_json()["providers"]
    assert entry["namespace"] == NS.NS_DNS and entry["blob"] is None
    assert entry["identifier"] == "dns here"
    assert field("Blob", "(none)") in nspv2_cli("catalog").stdout


def test_uninstall_and_enable_of_what_is_not_installed_exit_1(catalog_path: Path) -> None:
    for verb in ("uninstall", "enable", "disable"):
        out = nspv2_cli(verb, EMAIL)
        assert out.returncode == 1, out
        [line] = out.stderr.strip().splitlines()
        assert line.startswith(f"nspv2 {verb}: ") and "is not installed" in line, line
        assert str(catalog_path) in line


def test_a_corrupt_catalog_is_reported_with_its_line(catalog_path: Path) -> None:
    catalog_path.write_text("nspv2-catalog 1\nprovider nonsense\nend 1\n")
    for args in (["catalog"], ["install", EMAIL], ["uninstall", EMAIL], ["enable", EMAIL]):
        out = nspv2_cli(*args)
        assert out.returncode == 1, out
        [line] = out.stderr.strip().splitlines()
        assert line.startswith(f"nspv2 {args[0]}: "), line  # not the crash handler's
        assert "WSANO_RECOVERY" in line and "line 2" in line, line
        out = nspv2_cli(*args, "--json")
        assert out.returncode == 1, out
        doc = json.loads(out.stdout)
        assert set(doc) == {"error", "code"}, doc
        assert doc["code"] == int(WSAError.WSANO_RECOVERY) and "line 2" in doc["error"]
    assert catalog_path.read_text() == "nspv2-catalog 1\nprovider nonsense\nend 1\n"


def test_the_default_location_is_the_users_config_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NSPV2_CATALOG"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["HOME"] = str(tmp_path / "home")
    assert nspv2_cli("install", EMAIL, env=env).returncode == 0
    expected = tmp_path / "config" / "nspv2" / "catalog"
    assert expected.is_file()
    assert catalog_json(env)["location"] == str(expected)
    del env["XDG_CONFIG_HOME"]
    assert catalog_json(env)["location"] == str(tmp_path / "home" / ".config" / "nspv2" / "catalog")


def test_serve_refuses_a_provider_that_is_not_installed(catalog_path: Path) -> None:
    out = nspv2_cli("serve", EMAIL, timeout=60)
    assert out.returncode == 2, out
    [line] = out.stderr.strip().splitlines()
    assert line == (
        f"nspv2 serve: provider {{{EMAIL_PROVIDER_ID}}} (nspv2 e-mail presence) is not installed "
        f"in the namespace catalog at {catalog_path}: run `nspv2 install {EMAIL}` first "
        "(docs/catalog.md)"
    )


def test_install_native_reads_what_the_library_installs(
    native_lib: NativeLib, catalog_path: Path
) -> None:
    lib = email_provider(native_lib)
    out = nspv2_cli("install", "--native", str(lib), "--json")
    assert out.returncode == 0, out
    [done] = json.loads(out.stdout)["installed"]
    assert done["provider_id"] == str(NATIVE_ID)
    assert done["identifier"] == "nspv2 email example"
    [entry] = catalog_json()["providers"]
    assert entry["provider_id"] == str(NATIVE_ID)
    assert entry["identifier"] == "nspv2 email example"
    assert [d["name"] for d in entry["installation_blob"]["domains"]] == [
        "example.com",
        "example.org",
    ]
    # its domains replaced by --domain; then by library for uninstall
    assert nspv2_cli("uninstall", "--native", str(lib)).returncode == 0
    out = nspv2_cli("install", "--native", str(lib), "--domain", "example.net", "--wildcard")
    assert out.returncode == 0, out
    [entry] = catalog_json()["providers"]
    assert entry["installation_blob"]["domains"] == [{"name": "example.net", "level": "primary"}]
    assert entry["installation_blob"]["wildcard"] is True
    # a library that installs nothing (--no-install: advertising fails) names no provider
    refused = nspv2_cli("disable", "--native", str(lib), "--", "--no-install")
    assert refused.returncode == 1, refused
    assert "no provider to name" in refused.stderr and "`nspv2 disable GUID`" in refused.stderr
    assert nspv2_cli("uninstall", str(NATIVE_ID)).returncode == 0
    refused = nspv2_cli("install", "--native", str(lib), "--", "--no-install")
    assert refused.returncode == 1, refused
    assert "`nspv2 install GUID --namespace N" in refused.stderr, refused.stderr
    # ... and that form installs it; then serve advertises it
    out = nspv2_cli(
        "install",
        str(NATIVE_ID),
        "--namespace",
        "NS_EMAIL",
        "--name",
        "by hand",
        "--domain",
        "example.org",
        "--json",
    )
    assert out.returncode == 0, out
    [entry] = catalog_json()["providers"]
    assert entry["provider_id"] == str(NATIVE_ID) and entry["identifier"] == "by hand"
    assert entry["namespace"] == NS.NS_EMAIL
    assert entry["installation_blob"]["domains"] == [{"name": "example.org", "level": "primary"}]


def test_install_by_guid(catalog_path: Path) -> None:
    guid = "aaaaaaaa-0000-4000-8000-00000000ca09"
    out = nspv2_cli("install", f"{{{guid}}}", "--namespace", "12")
    assert out.returncode == 0, out
    [entry] = catalog_json()["providers"]
    assert (entry["provider_id"], entry["namespace"]) == (guid, NS.NS_DNS)
    assert entry["identifier"] == "" and entry["blob"] is None
    assert nspv2_cli("uninstall", guid).returncode == 0
    out = nspv2_cli("install", guid, "--namespace", "email", "--wildcard", "--name", "any")
    assert out.returncode == 0, out
    [entry] = catalog_json()["providers"]
    assert entry["identifier"] == "any" and entry["installation_blob"]["wildcard"] is True
    assert entry["installation_blob"]["domains"] == []


# -- Windows faked -----------------------------------------------------------------------


class FakeWs2_32:
    """ws2_32.dll's catalog functions as Python callables, recording calls.

    The catalog is a list of entries; ``elevated=False`` fails every change
    with ``denied`` (WSAEACCES, as WSCInstallNameSpaceEx documents, or
    ERROR_ACCESS_DENIED). The enumeration needs WSAStartup first
    (WSANOTINITIALISED otherwise) and packs entries as Winsock does:
    the structures at the head of the buffer, then identifiers and blobs.
    """

    def __init__(self, *, elevated: bool = True, denied: int = EACCES) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.elevated = elevated
        self.denied = denied
        self.error = 0
        self.started = 0
        self.entries: list[dict[str, Any]] = []

    def _fail(self, code: int) -> int:
        self.error = code
        return SOCKET_ERROR

    def WSAStartup(self, version: int, data: Any) -> int:
        self.calls.append(("WSAStartup", version))
        self.started += 1
        return 0

    def WSACleanup(self) -> int:
        self.calls.append(("WSACleanup",))
        self.started -= 1
        return 0

    def _install(
        self, name: str, ident: Any, path: Any, ns: int, ver: int, guid: Any, blob: Any
    ) -> int:
        pid = guid.contents.to_uuid()
        text = None
        if ident:
            n = 0
            while ident[n]:
                n += 1
            text = ctypes.string_at(ident, 2 * n).decode("utf-16-le")
        data = None
        if blob:
            data = ctypes.string_at(blob.contents.pBlobData, blob.contents.cbSize)
        self.calls.append((name, pid, text, ns, ver, data))
        if not self.elevated:
            return self._fail(self.denied)
        if any(e["id"] == pid for e in self.entries):
            return self._fail(int(WSAError.WSANO_RECOVERY))
        self.entries.append(
            {"id": pid, "ns": ns, "active": True, "ver": ver, "ident": text, "blob": data}
        )
        return 0

    def _uninstall(self, name: str, guid: Any) -> int:
        pid = guid.contents.to_uuid()
        self.calls.append((name, pid))
        if not self.elevated:
            return self._fail(self.denied)
        kept = [e for e in self.entries if e["id"] != pid]
        if len(kept) == len(self.entries):
            return self._fail(int(WSAError.WSAEINVAL))
        self.entries = kept
        return 0

    def _enable(self, name: str, guid: Any, on: int) -> int:
        pid = guid.contents.to_uuid()
        self.calls.append((name, pid, on))
        if not self.elevated:
            return self._fail(self.denied)
        for e in self.entries:
            if e["id"] == pid:
                e["active"] = bool(on)
                return 0
        return self._fail(int(WSAError.WSAEINVAL))

    def _enum(self, name: str, length: Any, buf: Any) -> int:
        self.calls.append((name, length[0]))
        if self.started <= 0:
            return self._fail(NOT_INITIALISED)
        fixed = ctypes.sizeof(WSANAMESPACE_INFOEXW) * len(self.entries)
        tails = [
            (
                (e["ident"] + "\0").encode("utf-16-le") if e["ident"] is not None else b"",
                e["blob"] or b"",
            )
            for e in self.entries
        ]
        needed = fixed + sum(len(a) + len(b) for a, b in tails)
        if not buf or length[0] < needed:
            length[0] = needed
            return self._fail(EFAULT)
        base = ctypes.cast(buf, ctypes.c_void_p).value
        assert base is not None
        at = base + fixed
        for i, (e, (ident, blob)) in enumerate(zip(self.entries, tails, strict=True)):
            info = WSANAMESPACE_INFOEXW.from_address(base + i * ctypes.sizeof(WSANAMESPACE_INFOEXW))
            info.NSProviderId = GUID.from_uuid(e["id"])
            info.dwNameSpace, info.fActive, info.dwVersion = e["ns"], int(e["active"]), e["ver"]
            info.lpszIdentifier = ctypes.cast(ctypes.c_void_p(at if ident else None), LPWSTR)
            ctypes.memmove(at, ident, len(ident))
            at += len(ident)
            pointer = ctypes.cast(
                ctypes.c_void_p(at if e["blob"] is not None else None),
                ctypes.POINTER(ctypes.c_uint8),
            )
            info.ProviderSpecific = BLOB(len(blob), pointer)
            ctypes.memmove(at, blob, len(blob))
            at += len(blob)
        return len(self.entries)

    def __getattr__(self, name: str) -> Any:
        base = name[:-2] if name.endswith("32") else name
        table: dict[str, Callable[..., int]] = {
            "WSCInstallNameSpaceEx": self._install,
            "WSCUnInstallNameSpace": self._uninstall,
            "WSCEnableNSProvider": self._enable,
            "WSAEnumNameSpaceProvidersExW": self._enum,
            "WSCEnumNameSpaceProvidersEx": self._enum,
        }
        if base not in table:
            raise AttributeError(name)
        method = table[base]
        return lambda *args: method(name, *args)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def ws2_32(monkeypatch: pytest.MonkeyPatch) -> FakeWs2_32:
    """Windows, with ``ctypes.WinDLL("ws2_32")`` the fake and ctypes' private
    last-error copy its last error."""
    fake = FakeWs2_32()
    loaded: list[str] = []

    def windll(name: str, **_kwargs: Any) -> FakeWs2_32:
        loaded.append(name)
        assert name == "ws2_32"
        return fake

    def winfunctype(restype: Any, *argtypes: Any, use_last_error: bool = False) -> Any:
        assert use_last_error or restype is ctypes.c_int  # WSAStartup / WSACleanup do not swap
        return ctypes.CFUNCTYPE(restype, *argtypes, use_last_error=use_last_error)

    monkeypatch.setattr("sys.platform", "win32")
    monkeypatch.setattr(ctypes, "WinDLL", windll, raising=False)
    monkeypatch.setattr(ctypes, "WINFUNCTYPE", winfunctype, raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: fake.error, raising=False)
    return fake


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_windows_not_elevated_says_to_run_elevated(
    ws2_32: FakeWs2_32, capsys: pytest.CaptureFixture[str]
) -> None:
    ws2_32.elevated = False
    for denied in (EACCES, 5):  # WSAEACCES, ERROR_ACCESS_DENIED
        ws2_32.denied = denied
        code, out, err = run_cli(capsys, "install", EMAIL)
        assert code == 1 and out == ""
        [line] = err.strip().splitlines()
        assert "elevated prompt" in line and "WSCInstallNameSpaceEx" in line, line
    for verb in ("uninstall", "disable"):
        code, _out, err = run_cli(capsys, verb, str(EMAIL_PROVIDER_ID))
        assert code == 1 and "elevated prompt" in err, err
    assert set(ws2_32.names()) >= {
        "WSCInstallNameSpaceEx",
        "WSCUnInstallNameSpace",
        "WSCEnableNSProvider",
    }
    assert not any(n.endswith("32") for n in ws2_32.names())


def test_windows_install_passes_what_winsock_expects(
    ws2_32: FakeWs2_32, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "install", EMAIL, "--domain", "example.com")
    assert code == 0, err
    assert "Windows' 64-bit namespace catalog (ws2_32.dll)" in out
    [call] = [c for c in ws2_32.calls if c[0] == "WSCInstallNameSpaceEx"]
    expected = InstallationBlob(domains=["example.com"]).pack()
    assert call[1:] == (EMAIL_PROVIDER_ID, "nspv2 e-mail presence", NS.NS_EMAIL, 1, expected)
    # installing again: WSANO_RECOVERY, said plainly
    code, _out, err = run_cli(capsys, "install", EMAIL)
    assert code == 1 and "already installed" in err and "WSANO_RECOVERY" in err, err


def test_windows_wow64_calls_the_32_bit_functions(
    ws2_32: FakeWs2_32, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = {}
    for args in (
        ["install", EMAIL, "--wow64"],
        ["disable", EMAIL, "--wow64"],
        ["enable", str(EMAIL_PROVIDER_ID), "--wow64"],
        ["catalog", "--wow64", "--json"],
        ["uninstall", EMAIL, "--wow64"],
    ):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, (args, err)
        outputs[args[0]] = out
    names = [n for n in ws2_32.names() if n not in ("WSAStartup", "WSACleanup")]
    assert names and all(n.endswith("32") for n in names), names
    assert {
        "WSCInstallNameSpaceEx32",
        "WSCEnableNSProvider32",
        "WSCUnInstallNameSpace32",
        "WSCEnumNameSpaceProvidersEx32",
    } <= set(names)
    assert [c[2] for c in ws2_32.calls if c[0] == "WSCEnableNSProvider32"] == [0, 1]
    doc = json.loads(outputs["catalog"])
    assert doc["location"] == "Windows' 32-bit (WOW64) namespace catalog (ws2_32.dll)"
    assert [p["active"] for p in doc["providers"]] == [True]
    assert "32-bit (WOW64)" in outputs["install"]


def test_windows_wow64_needs_a_64_bit_python(
    ws2_32: FakeWs2_32, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nspv2.host import catalog

    monkeypatch.setattr(catalog, "_pointer_bits", lambda: 32)
    code, _out, err = run_cli(capsys, "catalog", "--wow64")
    assert code == 2 and "64-bit Python" in err, err
    assert ws2_32.calls == []
    code, out, err = run_cli(capsys, "catalog", "--json")  # the process's own catalog is fine
    assert code == 0 and "32-bit namespace catalog" in json.loads(out)["location"], err


class Ws2_32Of32Bit(FakeWs2_32):
    """A 32-bit ws2_32.dll: no ``*32`` functions."""

    def __getattr__(self, name: str) -> Any:
        if name.endswith("32"):
            raise AttributeError(name)
        return super().__getattr__(name)


def test_windows_wow64_from_32_bit_python_is_a_usage_error_before_binding(
    ws2_32: FakeWs2_32, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nspv2.host import catalog

    fake = Ws2_32Of32Bit()
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, **_kw: fake, raising=False)
    monkeypatch.setattr(catalog, "_pointer_bits", lambda: 32)
    for args in (["catalog", "--wow64"], ["uninstall", str(EMAIL_PROVIDER_ID), "--wow64"]):
        code, _out, err = run_cli(capsys, *args)
        assert code == 2 and "64-bit Python" in err and "drop --wow64" in err, err
    # a 64-bit Python whose ws2_32.dll lacks them: a clean failure, exit 1
    monkeypatch.setattr(catalog, "_pointer_bits", lambda: 64)
    code, out, err = run_cli(capsys, "catalog", "--wow64")
    assert code == 1 and out == "", err
    [line] = err.strip().splitlines()
    assert line.startswith("nspv2 catalog: ") and "WSCInstallNameSpaceEx32" in line, line
    code, out, _err = run_cli(capsys, "install", EMAIL, "--wow64", "--json")
    assert code == 1 and "WSCInstallNameSpaceEx32" in json.loads(out)["error"], out
    assert fake.calls == []


@pytest.fixture
def native_host_first() -> None:
    """The native host library loaded before Windows is faked (as it is on
    Windows: the host DLL beside ws2_32)."""
    from nspv2.host.native import load_library

    load_library()


def test_windows_native_probe_reads_the_native_hosts_catalog(
    native_host_first: None,
    ws2_32: FakeWs2_32,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """``--native LIB`` on Windows: the probe lists what the library
    installed in the native host's memory catalog, never ws2_32's own
    providers (which ``Catalog()`` is there)."""
    from nspv2.host.catalog import MEMORY, Catalog, use_catalog
    from nspv2.host.native_provider import NativeProvider
    from nspv2.host.winsock import load_native_host
    from nspv2.tools import catalog as tool

    dns = uuid.UUID("22059d40-7e9e-11cf-ae5a-00aa00a7112b")  # Windows' own providers
    nla = uuid.UUID("6642243a-3ba8-4aa6-baa5-2e0bd71fdd83")
    ws2_32.entries = [
        {"id": dns, "ns": 12, "active": True, "ver": 1, "ident": "Tcpip", "blob": None},
        {"id": nla, "ns": 15, "active": True, "ver": 1, "ident": "NLA", "blob": None},
    ]
    mine = uuid.UUID("aaaaaaaa-0000-4000-8000-00000000ca0a")
    blob = InstallationBlob(domains=["example.com"]).pack()

    class Loaded:
        def close(self) -> None:
            pass

    def load(*_args: Any, **_kwargs: Any) -> Loaded:
        # what a library's entry point does: install itself, in the host's catalog
        Catalog(load_native_host()).install(mine, NS.NS_EMAIL, "the library's", blob)
        return Loaded()

    def run(argv: list[str], **_kwargs: Any) -> Any:  # the probe child, in this process
        import contextlib
        import io
        import types

        out = io.StringIO()
        try:
            # a fresh child's memory catalog is empty: so is this one first
            # (it lives as long as this test process)
            use_catalog(MEMORY)
            memory = Catalog(load_native_host())
            for left in memory.entries():
                memory.uninstall(left.provider_id)
            with contextlib.redirect_stdout(out):
                tool._probe_native(argv[-1])
        finally:
            use_catalog(None)
        return types.SimpleNamespace(stdout=out.getvalue(), stderr="", returncode=0)

    # the host DLL's own functions bound as on Windows (every one WINFUNCTYPE)
    monkeypatch.setattr(
        ctypes,
        "WINFUNCTYPE",
        lambda restype, *argtypes, use_last_error=False: ctypes.CFUNCTYPE(
            restype, *argtypes, use_last_error=use_last_error
        ),
        raising=False,
    )
    monkeypatch.setattr(NativeProvider, "load", staticmethod(load))
    monkeypatch.setattr(tool.subprocess, "run", run)
    lib = tmp_path / "provider.dll"
    lib.write_bytes(b"")
    named = tool._native_named(str(lib), [], 1.0)
    assert [(n.provider_id, n.namespace, n.identifier, n.blob) for n in named] == [
        (mine, NS.NS_EMAIL, "the library's", blob)
    ]
    assert not any(c[0].startswith("WSAEnum") for c in ws2_32.calls)


def test_windows_enumeration_is_read_back(
    ws2_32: FakeWs2_32, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = InstallationBlob(domains=["example.com"]).pack()[:-6]
    other = uuid.UUID("aaaaaaaa-0000-4000-8000-00000000ca02")
    nameless = uuid.UUID("aaaaaaaa-0000-4000-8000-00000000ca03")
    blob = InstallationBlob(level=1, wildcard=True, domains=["example.org"]).pack()
    ws2_32.entries = [
        {
            "id": EMAIL_PROVIDER_ID,
            "ns": 37,
            "active": True,
            "ver": 1,
            "ident": "mail ✉ 𝄞",
            "blob": blob,
        },
        {"id": other, "ns": 12, "active": False, "ver": 7, "ident": "Tcpip", "blob": None},
        {"id": nameless, "ns": 37, "active": True, "ver": 2, "ident": None, "blob": bad},
    ]
    code, out, err = run_cli(capsys, "catalog", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["location"] == "Windows' 64-bit namespace catalog (ws2_32.dll)"
    first, second, third = doc["providers"]
    assert first["identifier"] == "mail ✉ 𝄞" and bytes.fromhex(first["blob"]) == blob
    assert first["installation_blob"] == {
        "provider_type": "application",
        "wildcard": True,
        "domains": [{"name": "example.org", "level": "secondary"}],
    }
    assert second == {
        "provider_id": str(other),
        "identifier": "Tcpip",
        "namespace": 12,
        "namespace_name": "NS_DNS",
        "active": False,
        "version": 7,
        "blob": None,
        "installation_blob": None,
        "blob_problems": [],
    }
    assert all(p.keys() == second.keys() for p in doc["providers"])
    assert third["identifier"] == "" and third["installation_blob"] is None
    assert third["blob_problems"] and "ends past the blob" in third["blob_problems"][0]
    # the first call's buffer was too small: grown to what WSAEFAULT asked, once
    sizes = [c[1] for c in ws2_32.calls if c[0] == "WSAEnumNameSpaceProvidersExW"]
    assert len(sizes) == 2 and sizes[0] < sizes[1]
    assert ws2_32.started == 0  # every WSAStartup matched by a WSACleanup

    code, out, err = run_cli(capsys, "catalog")
    assert code == 0, err
    assert field("Description", "mail ✉ 𝄞") in out and field("Active", 0) in out
    assert "INVALID" in out and "3 namespace providers in the namespace catalog at Windows'" in out
