"""Docs that match the code: README's commands, links, the runnable examples."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_index_example_runs() -> None:
    code = python_blocks(DOCS / "index.md")[0]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "alice@example.com MISTATUS_ONLINE 192.0.2.10:5060" in out.stdout


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", text, re.S)
    assert commands[0].endswith("python -m nspv2 demo")
    assert commands[1].endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pytest" in commands[1] and "README.md" in ci


def test_every_doc_link_resolves() -> None:
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+\.(?:md|py))\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_docs_name_no_missing_source_file() -> None:
    for page in DOCS.glob("*.md"):
        for path in re.findall(
            r"`((?:native_stub|nspv2|tests)/[\w/.-]+\.(?:c|h|py))`", page.read_text()
        ):
            assert (ROOT / path).exists(), f"{page.name} names missing {path}"
