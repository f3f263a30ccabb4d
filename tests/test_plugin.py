"""The pytest plugin: the documented example file runs and passes, with the
fixtures coming from the installed ``pytest11`` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .typecheck import errors, mypy_strict

ROOT = Path(__file__).resolve().parent.parent


def test_documented_example_test_file_passes() -> None:
    example = ROOT / "docs" / "examples" / "test_presence.py"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example)],
        capture_output=True,
        text=True,
        cwd=ROOT / "docs" / "examples",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 passed" in out.stdout


def test_plugin_is_registered_by_the_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert names.get("nspv2") == "nspv2.testing.pytest_plugin"


_TYPED_TEST = """
from __future__ import annotations

import uuid
from collections.abc import Callable

from nspv2 import Provider, QuerySet, Session
from nspv2.testing import SlotHarness
from nspv2.testing.pytest_plugin import Advertise, MakeHarness


class Presence(Provider):
    provider_id = uuid.UUID(int=7)

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
        return []

    def online(self) -> int:
        return 1


def test_generic(nspv2_advertise: Advertise, nspv2_harness: MakeHarness) -> None:
    presence = nspv2_advertise(Presence())
    reveal_type(presence)
    count: int = presence.online()  # only type-checks if presence is a Presence
    harness: SlotHarness = nspv2_harness(presence)
    assert count and harness


def test_not_generic(nspv2_advertise: Callable[[Provider], Provider]) -> None:
    presence = nspv2_advertise(Presence())
    count: int = presence.online()
    assert count
"""


def test_advertise_fixture_keeps_the_providers_type_for_mypy(tmp_path: Path) -> None:
    found = mypy_strict(tmp_path, {"test_typed.py": _TYPED_TEST})["test_typed.py"]
    line_of = {
        text.strip(): n for n, text in enumerate(_TYPED_TEST.splitlines(), start=1) if text.strip()
    }
    revealed = line_of["reveal_type(presence)"]
    generic_use = line_of[
        "count: int = presence.online()  # only type-checks if presence is a Presence"
    ]
    plain_use = line_of["count: int = presence.online()"]
    assert any(
        f'test_typed.py:{revealed}: note: Revealed type is "test_typed.Presence"' in line
        for line in found
    ), found
    # The same use through a non-generic annotation is an error: the check discriminates.
    assert [line.split(":")[1] for line in errors(found)] == [str(plain_use)], found
    assert generic_use != plain_use


def test_fixtures_advertise_and_return_the_same_provider(tmp_path: Path) -> None:
    """The typed fixtures at run time, through the entry-point plugin."""
    (tmp_path / "test_run.py").write_text(
        _TYPED_TEST.replace("    reveal_type(presence)\n", "")
        + """

def test_advertised_is_served(nspv2_advertise: Advertise, nspv2_client: object) -> None:
    presence = Presence()
    assert nspv2_advertise(presence) is presence
    assert presence.routine().closed is False
"""
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_run.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed" in out.stdout


_CATALOG_TEST = """
import os
import uuid

from nspv2 import Host, Provider, QuerySet, WinsockError, WSAError
from nspv2.examples.email import EMAIL_PROVIDER_ID


class Here(Provider):
    provider_id = uuid.UUID("aaaaaaaa-0000-4000-8000-00000000c502")

    def lookup(self, session, restrictions, flags):
        return [QuerySet(restrictions.service_instance_name, comment="here")]


def test_catalog_is_the_tests_own(nspv2_catalog):
    assert nspv2_catalog.location == os.environ["NSPV2_CATALOG"] != os.environ["OUTER"]
    assert nspv2_catalog.entries() == []


def test_host_installs_in_it_while_advertised(nspv2_catalog, nspv2_advertise, nspv2_client):
    nspv2_advertise(Here())
    [entry] = nspv2_catalog.entries()
    assert entry.provider_id == Here.provider_id and entry.blob is None
    assert [r.comment for r in nspv2_client.lookup("x@example.com")] == ["here"]


def test_a_plain_host_needs_it_installed(nspv2_catalog):
    with Host() as host:
        try:
            host.advertise(Here())
        except WinsockError as exc:
            assert exc.code == WSAError.WSAEINVALIDPROVIDER
        else:
            raise AssertionError("advertised without being installed")
        nspv2_catalog.install(Here.provider_id, Here.namespace, "Here")
        host.advertise(Here())


def test_served_is_installed_first(nspv2_catalog, nspv2_served):
    served = nspv2_served("nspv2.examples.email:EmailDirectory")
    [entry] = nspv2_catalog.entries()
    assert entry.provider_id == EMAIL_PROVIDER_ID
    with served.client() as client, __import__("pytest").raises(WinsockError):
        client.lookup("nobody@example.com")
"""


def test_catalog_fixtures_keep_every_test_off_the_users_catalog(tmp_path: Path) -> None:
    """nspv2_catalog is a temporary file per test; nspv2_host installs there
    what it advertises (and uninstalls it), nspv2_served installs first; the
    catalog the environment named before is never written."""
    (tmp_path / "test_run.py").write_text(_CATALOG_TEST)
    outer = tmp_path / "users-catalog"
    env = {**os.environ, "NSPV2_CATALOG": str(outer), "OUTER": str(outer)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_run.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 passed" in out.stdout
    assert not outer.exists()
