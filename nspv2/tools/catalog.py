"""``nspv2 install``, ``uninstall``, ``enable``, ``disable`` and ``catalog``:
the namespace catalog from the command line (docs/catalog.md).

A provider is named as for ``check``: ``MODULE:CLASS`` (or a .py file), or
``--native LIB[:ENTRY] [-- ARGS]``, or its GUID (``install GUID`` also
needs ``--namespace N``, and takes ``--name TEXT``). A native library is
loaded in a child process with a catalog of its own in memory (the native
host's, on Windows too: never ws2_32's), and what it installs there (its
GUID, namespace, identifier and blob) is what these commands use; a
provider library that does not install itself cannot be named this way:
name it by GUID.

``install`` installs with WSCInstallNameSpaceEx: identifier the provider's
display name, its namespace, and as blob an NS_EMAIL installation blob built
from ``--domain`` / ``--level`` / ``--wildcard``, or the provider's own
(``install_blob``, or what a native one installs) when none of them is
given. On Windows every command calls ws2_32.dll (the 64-bit catalog, the
32-bit one with ``--wow64``) and needs an elevated prompt to change it.

Exit codes: 0 done, 1 the catalog refused (already installed, not
installed, not elevated, a corrupt catalog file), 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..provider.errors import WinsockError
from ..sdk.nsemail import (
    NAPI_PROVIDER_LEVEL,
    InstallationBlob,
    installation_blob_problems,
)
from ..sdk.winsock2 import NS, WSAError
from .common import EXIT_OK, EXIT_PROBLEMS, UsageError, add_json, emit_json, fail

if TYPE_CHECKING:
    from ..host.catalog import Catalog, CatalogEntry
    from .common import SubParsers

__all__ = [
    "Named",
    "add_commands",
    "cmd_catalog",
    "cmd_enable",
    "cmd_install",
    "cmd_uninstall",
    "format_entry",
    "open_catalog",
]

_LEVELS = {
    "primary": NAPI_PROVIDER_LEVEL.ProviderLevel_Primary,
    "secondary": NAPI_PROVIDER_LEVEL.ProviderLevel_Secondary,
}
_LEVEL_NAMES = {0: "none", 1: "secondary", 2: "primary"}
_TYPE_NAMES = {1: "application", 2: "service"}
#: How long a native library gets, beyond its --timeout, to be probed.
_PROBE_MARGIN = 30.0


@dataclass(frozen=True)
class Named:
    """A provider named on the command line."""

    provider_id: uuid.UUID
    #: None when named by GUID only
    namespace: int | None = None
    identifier: str | None = None
    #: the blob the provider declares / installs itself with
    blob: bytes | None = None
    #: what the command line said
    label: str = ""

    @property
    def who(self) -> str:
        return f"{{{self.provider_id}}}" + (f" ({self.identifier})" if self.identifier else "")


def open_catalog(args: argparse.Namespace) -> Catalog:
    """The platform's catalog (the 32-bit one with --wow64): a usage error
    when --wow64 does not apply, :class:`_RefusedError` when the library
    lacks the catalog's functions."""
    from ..host.catalog import Catalog

    try:
        return Catalog(wow64=bool(getattr(args, "wow64", False)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise _RefusedError(f"the namespace catalog cannot be opened: {exc}") from None


# -- naming a provider ------------------------------------------------------------------


def _python_named(text: str) -> Named:
    from .check import load_provider_class

    cls = load_provider_class(text)
    declared = getattr(cls, "install_blob", None)
    return Named(
        cls.provider_id,
        int(cls.namespace),
        getattr(cls, "name", None) or cls.__name__,
        None if declared is None else bytes(declared),
        text,
    )


def _native_named(
    text: str, entry_args: list[str], timeout: float, verb: str = "install"
) -> list[Named]:
    """What the native library installs in a catalog of its own in memory,
    loaded in a child process."""
    from .check_target import split_native

    path, entry = split_native(text)
    if not os.path.isfile(path):
        raise UsageError(f"--native {text}: no such file: {path}")
    env = dict(os.environ, NSPV2_CATALOG=":memory:")
    request = json.dumps({"path": path, "entry": entry, "args": entry_args, "timeout": timeout})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nspv2.tools.catalog", "--probe-native", request],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout + _PROBE_MARGIN,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _RefusedError(f"{path}:{entry} did not finish loading within {timeout:g} s") from None
    try:
        doc = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise _RefusedError(
            f"{path}:{entry} could not be loaded to read its GUID (exit {done.returncode}): {tail}"
        ) from None
    installed = [
        Named(
            uuid.UUID(e["provider_id"]),
            int(e["namespace"]),
            e["identifier"] or os.path.basename(path),
            None if e["blob"] is None else bytes.fromhex(e["blob"]),
            f"native {path}:{entry}",
        )
        for e in doc.get("installed", [])
    ]
    if not installed:
        why = doc.get("error") or "it installed nothing"
        by_guid = (
            "nspv2 install GUID --namespace N [--name TEXT] [--domain D ...]"
            if verb == "install"
            else f"nspv2 {verb} GUID"
        )
        raise _RefusedError(
            f"{path}:{entry}: no provider to name ({why}); a provider library installs itself "
            f"(WSCInstallNameSpaceEx) before it advertises: name one that does not by its "
            f"GUID (`{by_guid}`)"
        )
    return installed


def _probe_native(request: str) -> int:
    """The child of :func:`_native_named`: load the library with a catalog in
    memory, print what it installed as one JSON line, stop it."""
    from ..host.catalog import MEMORY, Catalog, use_catalog
    from ..host.native_provider import NativeProvider, NativeProviderError
    from ..host.winsock import load_native_host

    spec = json.loads(request)
    use_catalog(MEMORY)
    error = None
    loaded = None
    try:
        loaded = NativeProvider.load(
            spec["path"], spec["entry"], spec["args"], timeout=float(spec["timeout"])
        )
    except (NativeProviderError, OSError) as exc:
        error = str(exc)
    try:
        # The native host's catalog in memory, which the library installed
        # in: on Windows Catalog() would be ws2_32's, every provider of it.
        entries = Catalog(load_native_host()).entries()
    finally:
        if loaded is not None:
            loaded.close()
    doc = {
        "installed": [
            {
                "provider_id": str(e.provider_id),
                "namespace": e.namespace,
                "identifier": e.identifier,
                "blob": None if e.blob is None else e.blob.hex(),
            }
            for e in entries
        ],
        "error": error,
    }
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _guid_text(text: str) -> uuid.UUID | None:
    """``text`` as a GUID (braces allowed), or None."""
    try:
        return uuid.UUID(text.strip().strip("{}"))
    except ValueError:
        return None


def _named(args: argparse.Namespace, verb: str) -> list[Named]:
    entry_args = list(getattr(args, "entry_args", None) or [])
    if args.native is not None and args.provider is not None:
        raise UsageError("give MODULE:CLASS, GUID or --native LIB[:ENTRY], not both")
    if args.native is None and args.provider is None:
        raise UsageError("give the provider: MODULE:CLASS, --native LIB[:ENTRY] or its GUID")
    if entry_args and args.native is None:
        raise UsageError("arguments after -- are for a native provider's entry point (--native)")
    guid = None if args.provider is None else _guid_text(args.provider)
    namespace = getattr(args, "namespace", None)
    name = getattr(args, "name", None)
    if guid is None and (namespace is not None or name is not None):
        raise UsageError("--namespace and --name are for a provider named by its GUID")
    if args.native is not None:
        return _native_named(args.native, entry_args, args.timeout, verb)
    text = args.provider
    if guid is not None:
        if verb != "install":
            return [Named(guid, label=text)]
        if namespace is None:
            raise UsageError(
                f"installing {text} by GUID needs its namespace: --namespace N (NS_EMAIL, 37, ...)"
            )
        return [Named(guid, namespace, name, None, text)]
    if ":" not in text and not text.endswith(".py") and not os.path.isfile(text):
        raise UsageError(f"{text!r} is neither a GUID, MODULE:CLASS nor a .py file")
    return [_python_named(text)]


def _namespace_arg(text: str) -> int:
    """``--namespace``: a number (0x... too) or a name (NS_EMAIL, EMAIL)."""
    word = text.strip()
    try:
        value = int(word, 0)
    except ValueError:
        key = word.upper()
        key = key if key.startswith("NS_") else f"NS_{key}"
        try:
            return int(NS[key])
        except KeyError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a number nor a namespace name (NS_EMAIL, NS_DNS, ...)"
            ) from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..4294967295")
    return value


class _RefusedError(Exception):
    """The catalog (or loading the provider) refused: exit 1, one line
    (``code``: the Winsock code, when the catalog said one)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _refused(args: argparse.Namespace, verb: str, exc: _RefusedError) -> int:
    extra = {} if exc.code is None else {"code": exc.code}
    return fail(args, f"nspv2 {verb}: {exc}", EXIT_PROBLEMS, **extra)


def _find(catalog: Catalog, provider_id: uuid.UUID) -> CatalogEntry | bool | None:
    """``catalog.find``, or False when the catalog cannot be read (a corrupt
    file: the error already caught says why)."""
    try:
        return catalog.find(provider_id)
    except WinsockError:
        return False


# -- install ----------------------------------------------------------------------------


#: Longest domain name (RFC 1035's 255 octets on the wire: 253 characters
#: written, without the trailing dot) and label.
_MAX_DOMAIN = 253
_MAX_LABEL = 63


def _domain_key(domain: str) -> str:
    """How routing compares domains: ASCII case-insensitive, one trailing
    '.' ignored."""
    bare = domain[:-1] if domain.endswith(".") else domain
    return "".join(c.lower() if c.isascii() else c for c in bare)


def _check_domains(domains: list[str]) -> None:
    """Usage errors for --domain values routing could never match, or given twice."""
    seen: dict[str, str] = {}
    for domain in domains:
        bare = domain[:-1] if domain.endswith(".") else domain
        if not bare:
            raise UsageError(f"--domain {domain!r}: an empty name")
        if "@" in domain:
            raise UsageError(f"--domain {domain!r}: a domain, not an address (no '@')")
        if any(c.isspace() for c in domain):
            raise UsageError(f"--domain {domain!r}: contains whitespace")
        if len(bare) > _MAX_DOMAIN:
            raise UsageError(
                f"--domain {bare[:20]}...: {len(bare)} characters, longer than {_MAX_DOMAIN}"
            )
        long_label = next((label for label in bare.split(".") if len(label) > _MAX_LABEL), None)
        if long_label is not None:
            raise UsageError(
                f"--domain {domain!r}: the label {long_label[:20]}... has {len(long_label)} "
                f"characters, more than {_MAX_LABEL}"
            )
        key = _domain_key(domain)
        if key in seen:
            raise UsageError(
                f"--domain {domain!r} is given twice ({seen[key]!r}: domains compare "
                "case-insensitively, a trailing '.' ignored)"
            )
        seen[key] = domain


def _blob_for(args: argparse.Namespace, named: Named) -> bytes | None:
    """The blob ``install`` passes: built from the options, else the provider's own."""
    described = bool(args.domain) or args.wildcard
    if args.level is not None and not args.domain:
        raise UsageError("--level applies to the --domain names: give --domain D")
    _check_domains(list(args.domain))
    if described:
        if named.namespace != NS.NS_EMAIL:
            raise UsageError(
                f"--domain and --wildcard describe an NS_EMAIL provider; {named.label} is "
                f"{_namespace(named.namespace)}"
            )
        level = _LEVELS[args.level or "primary"]
        blob = InstallationBlob(level=level, wildcard=args.wildcard, domains=args.domain)
        problems = blob.problems()
        if problems:
            raise UsageError("; ".join(problems))
        return blob.pack()
    if named.namespace == NS.NS_EMAIL and named.blob is None:
        raise UsageError(
            f"{named.label} is an NS_EMAIL provider and declares no installation blob: give the "
            "domains it serves (--domain D [--level primary|secondary]) or --wildcard"
        )
    if named.blob is not None and named.namespace == NS.NS_EMAIL:
        problems = installation_blob_problems(named.blob)
        if problems:
            raise _RefusedError(
                f"{named.label}'s own installation blob breaks nsemail.h's rules: "
                + "; ".join(problems)
            )
    return named.blob


def _describe_blob(namespace: int, blob: bytes | None) -> str:
    if blob is None:
        return "no blob"
    if namespace != NS.NS_EMAIL:
        return f"a {len(blob)}-byte blob"
    parsed = InstallationBlob.parse(blob)
    parts = [f"{d.name} {_LEVEL_NAMES.get(int(d.level), d.level)}" for d in parsed.domains]
    if parsed.wildcard:
        parts.append("wildcard")
    return ", ".join(parts) or "no domains"


def cmd_install(args: argparse.Namespace) -> int:
    done: list[dict[str, Any]] = []
    try:
        catalog = open_catalog(args)
        for named in _named(args, "install"):
            assert named.namespace is not None
            blob = _blob_for(args, named)
            try:
                catalog.install(named.provider_id, named.namespace, named.identifier, blob)
            except WinsockError as exc:
                # WSANO_RECOVERY is also a corrupt catalog file: then the
                # catalog cannot be read either, and exc says why.
                if exc.code == WSAError.WSANO_RECOVERY and _find(catalog, named.provider_id):
                    raise _RefusedError(
                        f"provider {named.who} is already installed in the namespace catalog at "
                        f"{catalog.location} (WSANO_RECOVERY): `nspv2 uninstall "
                        f"{named.provider_id}` first to install it again",
                        exc.code,
                    ) from None
                raise _RefusedError(f"installing {named.who}: {exc}", exc.code) from None
            done.append(
                {
                    "provider_id": str(named.provider_id),
                    "identifier": named.identifier,
                    "namespace": named.namespace,
                    "blob": None if blob is None else blob.hex(),
                    "described": _describe_blob(named.namespace, blob),
                }
            )
    except _RefusedError as exc:
        return _refused(args, "install", exc)
    location = catalog.location
    if args.json:
        emit_json({"location": location, "installed": done})
    else:
        for d in done:
            print(
                f"installed {d['identifier']} {{{d['provider_id']}}} "
                f"({_namespace(d['namespace'], bare=True)}; {d['described']}) in the namespace "
                "catalog at "
                f"{location}"
            )
    return EXIT_OK


# -- uninstall, enable, disable ---------------------------------------------------------


def _change(args: argparse.Namespace, verb: str) -> int:
    done: list[str] = []
    try:
        catalog = open_catalog(args)
        for named in _named(args, verb):
            try:
                if verb == "uninstall":
                    catalog.uninstall(named.provider_id)
                else:
                    catalog.enable(named.provider_id, verb == "enable")
            except WinsockError as exc:
                if exc.code == WSAError.WSAEINVAL and _find(catalog, named.provider_id) is None:
                    raise _RefusedError(
                        f"provider {named.who} is not installed in the namespace catalog at "
                        f"{catalog.location} (WSAEINVAL)",
                        exc.code,
                    ) from None
                raise _RefusedError(f"{verb} {named.who}: {exc}", exc.code) from None
            done.append(str(named.provider_id))
    except _RefusedError as exc:
        return _refused(args, verb, exc)
    location = catalog.location
    past = {"uninstall": "uninstalled", "enable": "enabled", "disable": "disabled"}[verb]
    if args.json:
        emit_json({"location": location, past: done})
    else:
        for pid in done:
            print(f"{past} {{{pid}}} in the namespace catalog at {location}")
    return EXIT_OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    return _change(args, "uninstall")


def cmd_enable(args: argparse.Namespace) -> int:
    return _change(args, "enable")


def cmd_disable(args: argparse.Namespace) -> int:
    return _change(args, "disable")


# -- catalog ----------------------------------------------------------------------------


def _namespace(value: int | None, *, bare: bool = False) -> str:
    """``NS_EMAIL (37)`` (``NS_EMAIL`` when bare), or the number."""
    if value is None:
        return "?"
    try:
        name = NS(value).name
    except ValueError:
        return str(value)
    return name if bare else f"{name} ({value})"


def entry_doc(entry: CatalogEntry) -> dict[str, Any]:
    """One entry as ``nspv2 catalog --json`` prints it."""
    doc: dict[str, Any] = {
        "provider_id": str(entry.provider_id),
        "identifier": entry.identifier,
        "namespace": entry.namespace,
        "namespace_name": entry.namespace_name,
        "active": entry.active,
        "version": entry.version,
        "blob": None if entry.blob is None else entry.blob.hex(),
        # the same keys for every entry: null / [] when not an NS_EMAIL blob
        "installation_blob": None,
        "blob_problems": entry.blob_problems,
    }
    if entry.namespace == NS.NS_EMAIL and entry.blob is not None:
        parsed = entry.install_blob
        if parsed is not None:
            doc["installation_blob"] = {
                "provider_type": _TYPE_NAMES.get(parsed.provider_type, parsed.provider_type),
                "wildcard": parsed.wildcard,
                "domains": [
                    {"name": d.name, "level": _LEVEL_NAMES.get(int(d.level), int(d.level))}
                    for d in parsed.domains
                ],
            }
    return doc


def format_entry(entry: CatalogEntry) -> str:
    """One entry the way ``netsh winsock show catalog`` shows a namespace
    provider, plus the NS_EMAIL installation blob."""
    rule = "-" * 78
    out = [
        "Winsock Namespace Provider Entry",
        rule,
        f"{'Description:':<20}{entry.identifier or '(none)'}",
        f"{'Provider ID:':<20}{{{str(entry.provider_id).upper()}}}",
        f"{'Name Space:':<20}{entry.namespace} ({entry.namespace_name})",
        f"{'Active:':<20}{int(entry.active)}",
        f"{'Version:':<20}{entry.version}",
    ]
    if entry.blob is None:
        out.append(f"{'Blob:':<20}(none)")
    elif entry.namespace != NS.NS_EMAIL:
        out.append(f"{'Blob:':<20}{len(entry.blob)} bytes")
    else:
        parsed = entry.install_blob
        if parsed is None:
            out.append(f"{'Blob:':<20}{len(entry.blob)} bytes, INVALID:")
            out += [f"  {p}" for p in entry.blob_problems]
        else:
            out.append(
                f"{'Provider Type:':<20}{_TYPE_NAMES.get(parsed.provider_type, parsed.provider_type)}"
            )
            out.append(f"{'Wildcard:':<20}{'yes' if parsed.wildcard else 'no'}")
            out.append(f"{'Domains:':<20}{len(parsed.domains) or '(none)'}")
            out += [
                f"  {d.name}  {_LEVEL_NAMES.get(int(d.level), d.level)}" for d in parsed.domains
            ]
    return "\n".join(out)


def cmd_catalog(args: argparse.Namespace) -> int:
    try:
        catalog = open_catalog(args)
        location = catalog.location
        entries = catalog.entries()
    except _RefusedError as exc:
        return _refused(args, "catalog", exc)
    except WinsockError as exc:
        return fail(args, f"nspv2 catalog: {exc}", EXIT_PROBLEMS, code=exc.code)
    if args.json:
        emit_json({"location": location, "providers": [entry_doc(e) for e in entries]})
        return EXIT_OK
    for entry in entries:
        print(format_entry(entry))
        print()
    count = f"{len(entries)} namespace provider{'' if len(entries) == 1 else 's'}"
    print(f"{count} in the namespace catalog at {location}")
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------


def _add_provider(parser: argparse.ArgumentParser, *, install: bool) -> None:
    parser.add_argument(
        "provider",
        metavar="MODULE:CLASS|GUID",
        nargs="?",
        help="a Provider class (as for check: MODULE:CLASS or a .py file), or the provider's "
        "GUID" + (" (with --namespace)" if install else ""),
    )
    parser.add_argument(
        "--native",
        metavar="LIB[:ENTRY]",
        help="a C provider library: loaded in a child process (with a catalog in memory) to "
        "read what it installs; its entry gets the ARGS after --",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a native provider's entry point gets to advertise (default: %(default)g)",
    )
    _add_wow64(parser)
    add_json(parser, "what was done")


def _add_wow64(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wow64",
        action="store_true",
        help="Windows, from a 64-bit Python: the 32-bit catalog (the *32 functions of ws2_32)",
    )


def add_commands(sub: SubParsers) -> None:
    p_install = sub.add_parser(
        "install",
        help="install a provider in the namespace catalog (WSCInstallNameSpaceEx)",
        usage="%(prog)s [-h] [options] (MODULE:CLASS | GUID --namespace N | --native "
        "LIB[:ENTRY] [-- ARGS...])",
        description="Install a provider in the namespace catalog: identifier its display "
        "name, its namespace, and for NS_EMAIL an installation blob built from --domain, "
        "--level and --wildcard (or the provider's own blob when none is given); a provider "
        "named by GUID (a C library that does not install itself) needs --namespace and may "
        "have --name. A provider "
        "must be installed before it advertises (nspv2 serve). On Windows: ws2_32's catalog, "
        "from an elevated prompt. docs/catalog.md.",
    )
    _add_provider(p_install, install=True)
    p_install.add_argument(
        "--namespace",
        type=_namespace_arg,
        metavar="N",
        help="with a GUID: its namespace, a number or a name (NS_EMAIL, NS_DNS, ...)",
    )
    p_install.add_argument(
        "--name",
        metavar="TEXT",
        help="with a GUID: its identifier, the display name the catalog lists (default: none)",
    )
    p_install.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="D",
        help="a domain the NS_EMAIL provider serves (repeatable)",
    )
    p_install.add_argument(
        "--level",
        choices=sorted(_LEVELS),
        help="its level for the --domain names (default: primary)",
    )
    p_install.add_argument(
        "--wildcard",
        action="store_true",
        help="it answers for any domain (fSupportsWildCard), after the domains' own providers",
    )
    p_install.set_defaults(func=cmd_install, entry_args=[])

    for verb, func, text in (
        ("uninstall", cmd_uninstall, "remove a provider from the namespace catalog"),
        ("enable", cmd_enable, "enable an installed provider (WSCEnableNSProvider)"),
        ("disable", cmd_disable, "disable an installed provider: listed, never routed to"),
    ):
        p = sub.add_parser(
            verb,
            help=text,
            usage="%(prog)s [-h] [options] (MODULE:CLASS | GUID | --native LIB[:ENTRY] "
            "[-- ARGS...])",
            description=text[0].upper() + text[1:] + ". docs/catalog.md.",
        )
        _add_provider(p, install=False)
        p.set_defaults(func=func, entry_args=[])

    p_catalog = sub.add_parser(
        "catalog",
        help="list the namespace catalog (as netsh winsock show catalog)",
        description="Every installed namespace provider, in catalog order: description "
        "(identifier), provider id, namespace, active, version, and for NS_EMAIL its "
        "installation blob (type, wildcard, domains and levels; the rules an invalid one "
        "breaks); then where the catalog is. docs/catalog.md.",
    )
    _add_wow64(p_catalog)
    add_json(p_catalog, "the catalog")
    p_catalog.set_defaults(func=cmd_catalog)


if __name__ == "__main__":  # the native probe's child process
    if len(sys.argv) == 3 and sys.argv[1] == "--probe-native":
        sys.exit(_probe_native(sys.argv[2]))
    sys.exit("nspv2.tools.catalog: run `nspv2 install` / `nspv2 catalog` instead")
