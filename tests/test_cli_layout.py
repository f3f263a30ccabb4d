"""``python -m nspv2 layout``: formats, bad input, and docs/layout.md freshness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nspv2.sdk.layout import ABI, STRUCTS, layout, render_layout
from nspv2.tools.cli import main

from .clirun import nspv2_cli

ROOT = Path(__file__).resolve().parent.parent
DOC_ABIS = ["x86", "x64"]


def test_layout_doc_is_fresh() -> None:
    doc = (ROOT / "docs" / "layout.md").read_text()
    assert doc == render_layout(DOC_ABIS, "markdown"), (
        "docs/layout.md is stale: regenerate with "
        "python -m nspv2 layout --format markdown --abi x86 --abi x64 > docs/layout.md"
    )


@pytest.mark.parametrize("abi", ["x64", "x86", "host"])
def test_json_matches_the_definitions(abi: str) -> None:
    out = nspv2_cli("layout", "--abi", abi, "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert list(doc) == [abi]
    for s in STRUCTS:
        ours = layout(s, ABI(abi))
        entry = doc[abi][s.__name__]
        assert entry["size"] == ours.size and entry["alignment"] == ours.alignment
        assert [(f["name"], f["offset"]) for f in entry["fields"]] == [
            (f.name, f.offset) for f in ours.fields
        ]


def test_markdown_and_c_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layout", "--abi", "x86"]) == 0
    md = capsys.readouterr().out
    assert "| `WSAQUERYSET2W` | 56 | 4 |" in md
    assert main(["layout", "--abi", "x64", "--format", "c"]) == 0
    c = capsys.readouterr().out
    assert '_Static_assert(sizeof(NSPV2_ROUTINE) == 72, "sizeof(NSPV2_ROUTINE) on x64");' in c
    assert "#if defined(_WIN64) /* x64 */" in c


@pytest.mark.parametrize(
    "args, word",
    [
        (["layout", "--abi", "arm64"], "x64, x86, host"),
        (["layout", "--format", "yaml"], "markdown, c, json"),
        (["frobnicate"], "layout"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], word: str) -> None:
    out = nspv2_cli(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for choice in word.split(", "):
        assert choice in lines[0]


def test_help_on_every_command() -> None:
    for args in (["--help"], ["layout", "--help"]):
        out = nspv2_cli(*args)
        assert out.returncode == 0 and "usage:" in out.stdout
