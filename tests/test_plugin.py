"""The pytest plugin: the documented example file runs and passes, with the
fixtures coming from the installed ``pytest11`` entry point."""

from __future__ import annotations

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
