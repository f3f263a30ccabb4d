"""Routing across provider processes (docs/client-c.md, "Routed mode"): a
client program built against the C client library, with no socket chosen,
reaches the matching enabled providers of every live ``nspv2 serve``
process of its runtime folder, in catalog order, by the catalog's rules.

Each provider of tests/routing_providers.py runs in its own server process
(a shared private runtime folder per test), installed in the test's own
catalog (NSPV2_CATALOG, tests/conftest.py) before it is served; its results
carry its label as the comment, and the calls it gets are appended to a
file of its own, so a test sees who answered and who was never called.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nspv2 import WSAError
from nspv2.host.catalog import Catalog

from . import routing_providers as rp
from .nativebuild import compiler, nspv2_config
from .served import Served, private_folder, serving
from .test_client_c import DRIVER, ROOT, SAN, _cc, driver

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="clients use ws2_32.dll on Windows"),
    pytest.mark.skipif(compiler() is None, reason="no C compiler"),
]

PROVIDERS = Path(rp.__file__).resolve()
NS_EMAIL, NS_ALL = 37, 0
ALL = 0x0FF0  # LUP_RETURN_ALL
NON_AUTH = ALL | 0x4000  # | LUP_NON_AUTHORITATIVE
WSA_E_NO_MORE = int(WSAError.WSA_E_NO_MORE)
WSASERVICE_NOT_FOUND = int(WSAError.WSASERVICE_NOT_FOUND)
WSAECONNRESET = 10054
REGISTER = 0  # RNRSERVICE_REGISTER
TIMEOUT_MS = 700  # the client's reply timeout where a server is stopped
RETRY_S = 1.0  # a lost connection is retried no sooner (client.c RETRY_MIN_MS)


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """Server pid stopped (SIGSTOP) inside the block, continued after it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        stat = Path(f"/proc/{pid}/stat")
        deadline = time.monotonic() + 10
        while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] not in "Tt":
            assert time.monotonic() < deadline, f"pid {pid} did not stop"
            time.sleep(0.01)
        if not stat.exists():
            time.sleep(0.2)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def install(*classes: type[rp.Routed]) -> None:
    """Install the providers in this test's catalog (NSPV2_CATALOG)."""
    catalog = Catalog()
    for cls in classes:
        catalog.install(cls.provider_id, cls.namespace, cls.name or cls.__name__, cls.install_blob)


class Cluster:
    """Provider processes sharing one private runtime folder."""

    def __init__(self, folder: Path, calls: Path, stack: contextlib.ExitStack) -> None:
        self.folder = folder
        self.calls_dir = calls
        self.stack = stack
        self.served: dict[str, Served] = {}

    def serve(self, cls: type[rp.Routed], mode: str = "answer", key: str | None = None) -> Served:
        """Serve cls (installed already) in a process of its own; ``key``
        names it (default: its label) for calls() and served."""
        key = key or cls.label
        served = self.stack.enter_context(
            serving(
                f"{PROVIDERS}:{cls.__name__}",
                runtime_dir=self.folder,
                env={"ROUTING_MODE": mode, "ROUTING_CALLS": str(self.calls_dir / key)},
            )
        )
        self.served[key] = served
        return served

    def calls(self, key: str) -> list[str]:
        """The calls provider process ``key`` got ([] if never called)."""
        path = self.calls_dir / key
        return path.read_text().splitlines() if path.exists() else []

    def env(self) -> dict[str, str]:
        """A client's environment: discovery through the folder (routed mode)."""
        env = {k: v for k, v in os.environ.items() if k != "NSPV2_SOCKET"}
        env["NSPV2_RUNTIME_DIR"] = str(self.folder)
        return env


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    folder = private_folder()
    calls = tmp_path / "calls"
    calls.mkdir()
    try:
        with contextlib.ExitStack() as stack:
            yield Cluster(folder, calls, stack)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def client_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """client_driver linked against the installed client library."""
    out = tmp_path_factory.mktemp("routing") / "client_driver"
    flags = nspv2_config("--cflags", "--client-libs").split()
    _cc("-pthread", "-o", out, DRIVER, *flags)
    return out


def test_primary_answers_and_the_secondary_is_begun_but_never_asked(
    cluster: Cluster, client_driver: Path
) -> None:
    install(rp.Primary, rp.Secondary)
    cluster.serve(rp.Primary)
    cluster.serve(rp.Secondary)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}") == "ok 1 primary"
        assert d.do(f"lookupx alice@EXAMPLE.com. {NS_EMAIL} {ALL}") == "ok 1 primary"
        # the old one-line command, the same route
        assert d.do("lookup alice@example.com") == "ok 1 primary"
        info = d.do("info")
        assert re.fullmatch(r"ok state=1 startups=1 .*providers=2 .*", info), info
        assert d.do("cleanup") == "ok"
    # Begin reaches every routed provider; Next stayed on the one that answered
    assert cluster.calls("primary").count("next alice@example.com") == 2
    assert "begin alice@example.com" in cluster.calls("secondary")
    assert not [c for c in cluster.calls("secondary") if c.startswith("next")]
    for served in cluster.served.values():
        served.wait_log(r"ended: cleanup")


@pytest.mark.parametrize("mode", ["none", "empty", "fail-next"])
def test_the_secondary_answers_when_the_primary_has_nothing(
    cluster: Cluster, client_driver: Path, mode: str
) -> None:
    """Begin fails (dropped), no result (its end), or Next fails (recorded,
    skipped): the secondary's answer."""
    install(rp.Primary, rp.Secondary)
    cluster.serve(rp.Primary, mode)
    cluster.serve(rp.Secondary)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}") == "ok 1 secondary"
    assert "begin alice@example.com" in cluster.calls("primary")


def test_nothing_found_anywhere_is_the_routes_error(cluster: Cluster, client_driver: Path) -> None:
    install(rp.Primary, rp.Secondary)
    cluster.serve(rp.Primary, "none")
    cluster.serve(rp.Secondary, "empty")
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        # the secondary's lookup began and ended without a result
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}") == "ok 0 "
        # no provider of the catalog for that domain: nothing routed
        answer = d.do(f"lookupx alice@example.net {NS_EMAIL} {ALL}")
        assert answer.startswith(f"err {WSASERVICE_NOT_FOUND} no provider for this query"), answer


def test_non_authoritative_queries_every_matching_provider(
    cluster: Cluster, client_driver: Path
) -> None:
    install(rp.Primary, rp.Secondary, rp.OtherDomain)
    cluster.serve(rp.Primary)
    cluster.serve(rp.Secondary)
    cluster.serve(rp.OtherDomain)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {NON_AUTH}") == (
            "ok 2 primary,secondary"
        )
        assert d.do(f"lookupx alice@example.org {NS_EMAIL} {NON_AUTH}") == "ok 1 other-domain"
    assert cluster.calls("other-domain") == ["startup", "begin alice@example.org",
                                             "next alice@example.org"]  # fmt: skip


def test_a_wildcard_provider_answers_for_an_unknown_domain(
    cluster: Cluster, client_driver: Path
) -> None:
    install(rp.Primary, rp.Wildcard, rp.OtherDomain)
    cluster.serve(rp.Primary)
    cluster.serve(rp.Wildcard)
    cluster.serve(rp.OtherDomain)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"lookupx bob@unknown.test {NS_EMAIL} {ALL}") == "ok 1 wildcard"
        assert d.do(f"lookupx bob@unknown.test {NS_EMAIL} {NON_AUTH}") == "ok 1 wildcard"
        assert cluster.calls("primary") == []
        assert cluster.calls("other-domain") == []
        # a known domain: its primary first, the wildcard last
        assert d.do(f"lookupx bob@example.com {NS_EMAIL} {ALL}") == "ok 1 primary"
        assert d.do(f"lookupx bob@example.com {NS_EMAIL} {NON_AUTH}") == "ok 2 primary,wildcard"


def test_a_disabled_provider_is_never_called(cluster: Cluster, client_driver: Path) -> None:
    install(rp.Primary, rp.Secondary)
    cluster.serve(rp.Primary)
    cluster.serve(rp.Secondary)
    catalog = Catalog()
    catalog.enable(rp.Primary.provider_id, False)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {NON_AUTH}") == "ok 1 secondary"
        assert d.do(f"setx alice@example.com {NS_ALL} {REGISTER}") == "ok"
        # named explicitly: a disabled provider is not found
        answer = d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL} {rp.Primary.provider_id}")
        assert answer.startswith(f"err {WSASERVICE_NOT_FOUND} provider "), answer
        assert cluster.calls("primary") == []  # not even NSPv2Startup
        # enabled again: the catalog is read again at the next call
        catalog.enable(rp.Primary.provider_id, True)
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}") == "ok 1 primary"


def test_ns_all_reaches_every_namespace_and_domain_that_matches(
    cluster: Cluster, client_driver: Path
) -> None:
    install(*rp.ALL)
    for cls in rp.ALL:
        cluster.serve(cls)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"lookupx carol@example.com {NS_ALL} {ALL}") == "ok 1 primary"
        answer = d.do(f"lookupx carol@example.com {NS_ALL} {NON_AUTH}")
        found = answer.split()
        assert found[:2] == ["ok", "4"], answer
        labels = found[2].split(",")
        assert labels[0] == "primary" and labels[-1] == "wildcard", answer
        assert sorted(labels) == ["other-space", "primary", "secondary", "wildcard"]
        # NS_EMAIL alone: not the other namespace's provider
        assert d.do(f"lookupx carol@example.com {NS_EMAIL} {NON_AUTH}") == (
            "ok 3 primary,secondary,wildcard"
        )
    assert cluster.calls("other-domain") == []
    # the authoritative lookup began it too (Begin reaches every routed
    # provider) but asked only the primary; the other one asked it
    assert cluster.calls("other-space") == ["startup", "begin carol@example.com",
                                            "begin carol@example.com",
                                            "next carol@example.com"]  # fmt: skip


def test_a_server_killed_between_begin_and_next_is_skipped_with_its_error_recorded(
    cluster: Cluster, client_driver: Path
) -> None:
    install(rp.Primary, rp.Secondary)
    primary = cluster.serve(rp.Primary)
    cluster.serve(rp.Secondary)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        begun = d.do(f"begin alice@example.com {NS_EMAIL} {ALL}")
        assert re.fullmatch(r"ok \d+", begun), begun
        handle = begun.split()[1]
        assert primary.stop(signal.SIGKILL) == -signal.SIGKILL
        assert d.do(f"next {handle}") == "ok secondary"
        done = d.do(f"next {handle}")
        assert done.startswith(f"err {WSA_E_NO_MORE} no more results (provider "), done
        assert f"{rp.Primary.provider_id}" in done
        assert f"(pid {primary.pid}) was skipped: the provider process closed the connection" in (
            done
        )
        assert d.do(f"next {handle}").startswith(f"err {WSA_E_NO_MORE} ")
        assert d.do(f"end {handle}") == "ok"
        assert d.do(f"end {handle}").startswith(f"err {int(WSAError.WSA_INVALID_HANDLE)} ")
        # the dead server is not routed to any more
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}") == "ok 1 secondary"
        assert re.fullmatch(r"ok state=1 .*providers=1 .*", d.do("info"))
        assert d.do("cleanup") == "ok"
    cluster.served["secondary"].wait_log(r"ended: cleanup")


def test_set_service_goes_to_the_first_of_the_route_the_named_one_or_all(
    cluster: Cluster, client_driver: Path
) -> None:
    install(rp.Primary, rp.Secondary)
    cluster.serve(rp.Primary)
    cluster.serve(rp.Secondary)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"setx dave@example.com {NS_EMAIL} {REGISTER}") == "ok"
        assert cluster.calls("primary") == ["startup", "set dave@example.com 0"]
        assert cluster.calls("secondary") == []
        assert d.do(f"setx erin@example.com {NS_EMAIL} {REGISTER} {rp.Secondary.provider_id}") == (
            "ok"
        )
        assert cluster.calls("secondary") == ["startup", "set erin@example.com 0"]
        assert d.do(f"setx fred@example.com {NS_ALL} 1") == "ok"
        assert cluster.calls("primary")[-1] == "set fred@example.com 1"
        assert cluster.calls("secondary")[-1] == "set fred@example.com 1"
        unknown = uuid.UUID(int=7)
        answer = d.do(f"setx fred@example.com {NS_EMAIL} {REGISTER} {unknown}")
        assert answer.startswith(f"err {int(WSAError.WSAEINVAL)} provider {unknown} "), answer


def test_a_provider_served_twice_is_reached_at_the_lowest_pid(
    cluster: Cluster, client_driver: Path
) -> None:
    install(rp.Primary)
    one = cluster.serve(rp.Primary, key="one")
    two = cluster.serve(rp.Primary, key="two")
    low, high = sorted(["one", "two"], key=lambda k: cluster.served[k].pid)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {NON_AUTH}") == "ok 1 primary"
        info = d.do("info")
        assert f"pid={min(one.pid, two.pid)} " in info, info
    assert "begin alice@example.com" in cluster.calls(low)
    assert cluster.calls(high) == []


def test_a_lost_connection_fails_its_parts_until_the_last_cleanup(
    cluster: Cluster, client_driver: Path
) -> None:
    install(rp.Primary, rp.Secondary)
    cluster.serve(rp.Primary)
    cluster.serve(rp.Secondary)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do("connect") == "ok"
        assert re.fullmatch(r"ok state=1 .*providers=2 .*", d.do("info"))
        assert d.do("abandon") == "ok"
        assert d.do("info").startswith("ok state=2 ")
        # routed to both lost connections' providers, neither begun: not
        # found, the text giving the first one's cause
        lost = d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}")
        assert re.fullmatch(
            rf"err {WSASERVICE_NOT_FOUND} no provider answered: provider {rp.Primary.provider_id} "
            rf"\(pid \d+\): the connection to provider process \d+ was lost earlier: "
            r"the connection was abandoned \(nspv2_client_abandon\)",
            lost,
        ), lost
        # registration is not a lookup: the first error
        assert d.do("register x@example.com").startswith(f"err {WSAECONNRESET} ")
        # abandoned connections are not retried, however long one waits
        time.sleep(RETRY_S + 0.2)
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}") == lost
        assert d.do("cleanup") == "ok"
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}") == "ok 1 primary"


def test_a_server_that_timed_out_is_passed_over_then_retried(
    cluster: Cluster, client_driver: Path
) -> None:
    """A provider served twice: while the lowest-pid server is stopped, the
    lookup whose Begin times out there goes on at the other server, and so
    do the next ones (a connected server is preferred to a lost one); once
    its retry time has come, the lost connection is made again (a new
    session) and the lowest pid serves again."""
    install(rp.Wildcard)
    cluster.serve(rp.Wildcard, key="one")
    cluster.serve(rp.Wildcard, key="two")
    low, high = sorted(cluster.served.values(), key=lambda s: s.pid)
    high_key = next(k for k, s in cluster.served.items() if s is high)
    lookup = f"lookupx bob@nowhere.test {NS_EMAIL} {ALL}"

    def high_begins() -> int:
        return cluster.calls(high_key).count("begin bob@nowhere.test")

    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"timeout {TIMEOUT_MS}") == "ok"
        assert d.do(lookup) == "ok 1 wildcard"
        assert high_begins() == 0
        with stopped(low.pid):
            assert d.do(lookup) == "ok 1 wildcard"
            lost_at = time.monotonic()  # the loss came before this
            assert high_begins() == 1
        assert d.do(lookup) == "ok 1 wildcard"
        if time.monotonic() - lost_at < RETRY_S * 0.8:
            # not yet retried: the connected server, although its pid is higher
            assert high_begins() == 2
            assert f" pid={high.pid} " in d.do("info")
        time.sleep(RETRY_S + 0.2)
        before = high_begins()
        assert d.do(lookup) == "ok 1 wildcard"
        assert high_begins() == before  # the lowest pid, connected again
        info = d.do("info")
        assert info.startswith("ok state=1 ") and f" pid={low.pid} " in info, info
        assert d.do("cleanup") == "ok"
    # the retried connection is a session of its own, ended by the cleanup
    low.wait_log(r"ended: cleanup")


def test_a_part_on_a_connection_lost_earlier_says_so_and_is_retried_once_no_part_holds_it(
    cluster: Cluster, client_driver: Path
) -> None:
    install(rp.Primary, rp.Secondary)
    primary = cluster.serve(rp.Primary)
    cluster.serve(rp.Secondary)
    with driver(client_driver, cluster.env()) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"timeout {TIMEOUT_MS}") == "ok"
        held = d.do(f"begin alice@example.com {NS_EMAIL} {NON_AUTH}").split()[1]
        with stopped(primary.pid):
            # its Begin times out at the primary: that connection is lost
            assert d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}") == "ok 1 secondary"
        assert d.do(f"next {held}") == "ok secondary"
        done = d.do(f"next {held}")
        assert done.startswith(
            f"err {WSA_E_NO_MORE} no more results (provider {rp.Primary.provider_id} "
            f"(pid {primary.pid}) was skipped: the connection to provider process "
            f"{primary.pid} was lost earlier: no reply from the provider process within "
            f"{TIMEOUT_MS} ms"
        ), done
        time.sleep(RETRY_S + 0.2)
        # `held` still has a part on the lost connection: not made again, so
        # that part's handle can never reach a new session
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}") == "ok 1 secondary"
        assert d.do(f"end {held}") == "ok"
        assert d.do(f"lookupx alice@example.com {NS_EMAIL} {ALL}") == "ok 1 primary"
        assert d.do("cleanup") == "ok"
    primary.wait_log(r"ended: cleanup")


def test_routed_mode_under_asan(cluster: Cluster, tmp_path: Path) -> None:
    """The library's sources compiled into the driver with ASan + UBSan,
    routed: lookups over three servers, a server killed mid-lookup, set
    service, a forked child's own sessions, cleanup."""
    sources = [
        ROOT / "native_stub" / "client" / "client.c",
        ROOT / "native_stub" / "src" / "wire.c",
        ROOT / "native_stub" / "src" / "catalog.c",
    ]
    if not all(s.is_file() for s in sources):
        pytest.skip("the client library's sources are in the checkout only")
    program = tmp_path / "client_driver_asan"
    try:
        _cc(*SAN, "-g", "-O1", "-pthread", f"-I{ROOT / 'native_stub' / 'include'}",
            f"-I{ROOT / 'native_stub' / 'src'}", "-o", program, DRIVER, *sources)  # fmt: skip
    except AssertionError as exc:
        if "asan" in str(exc).lower() and "cannot find" in str(exc).lower():
            pytest.skip("no AddressSanitizer runtime")
        raise
    install(rp.Primary, rp.Secondary, rp.Wildcard)
    primary = cluster.serve(rp.Primary)
    cluster.serve(rp.Secondary)
    cluster.serve(rp.Wildcard)
    env = {**cluster.env(), "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"}
    with driver(program, env) as d:
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"lookupx a@example.com {NS_EMAIL} {NON_AUTH}") == (
            "ok 3 primary,secondary,wildcard"
        )
        assert d.do("threads 4 10 a@example.com", timeout=120) == "ok 40 0"
        assert d.do(f"setx a@example.com {NS_ALL} {REGISTER}") == "ok"
        assert d.do(f"fork lookupx a@x.test {NS_EMAIL} {ALL};cleanup") == "ok 1 wildcard"
        assert d.answer() == "ok"
        assert re.fullmatch(r"ok child \d+ exited 0", d.answer())
        handle = d.do(f"begin a@example.com {NS_EMAIL} {NON_AUTH}").split()[1]
        unended = d.do(f"begin a@example.com {NS_EMAIL} {ALL}").split()[1]
        primary.stop(signal.SIGKILL)
        assert d.do(f"next {handle}") == "ok secondary"
        assert d.do(f"next {handle}") == "ok wildcard"
        assert d.do(f"next {handle}").startswith(f"err {WSA_E_NO_MORE} no more results (")
        assert d.do(f"end {handle}") == "ok"
        assert d.do(f"next {unended}") == "ok secondary"
        assert d.do(f"lookupx a@example.com {NS_EMAIL} {ALL}") == "ok 1 secondary"
        assert d.do("cleanup") == "ok"  # the unended lookup goes with it
        assert d.do("startup") == "ok 2.2"
        assert d.do(f"lookupx a@example.com {NS_EMAIL} {ALL}") == "ok 1 secondary"
        # a connection lost while its server lives, then made again
        assert d.do(f"timeout {TIMEOUT_MS}") == "ok"
        with stopped(cluster.served["secondary"].pid):
            assert d.do(f"lookupx a@example.com {NS_EMAIL} {ALL}") == "ok 1 wildcard"
        time.sleep(RETRY_S + 0.2)
        assert d.do(f"lookupx a@example.com {NS_EMAIL} {ALL}") == "ok 1 secondary"
        assert d.do("cleanup") == "ok"
        assert d.proc.stdin is not None
        d.proc.stdin.close()
        assert d.proc.wait(timeout=60) == 0, d.stderr()
        report = d.stderr()
        assert "Sanitizer" not in report and "runtime error" not in report, report
