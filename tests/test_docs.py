"""Docs that match the code: every code block of README.md and docs/*.md runs
and prints what the page says (the convention is in docs/index.md, "Examples
that run"); README's commands, links and source paths."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .docblocks import KINDS, Block, C, Result, compare, expected, parse, run_in_child

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def page_blocks(page: Path) -> list[Block]:
    return parse(page.read_text(), page.relative_to(ROOT).as_posix())


BLOCKS = [block for page in PAGES for block in page_blocks(page)]


class PageRuns:
    """Each page runs once, in its own temporary folder, the first time one of its blocks is tested."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.results: dict[str, dict[int, Result]] = {}

    def result(self, block: Block) -> Result:
        if block.page not in self.results:
            cwd = self.factory.mktemp(Path(block.page).stem)
            self.results[block.page] = run_in_child(page_blocks(ROOT / block.page), cwd)
        return self.results[block.page][block.line]


@pytest.fixture(scope="session")
def page_runs(tmp_path_factory: pytest.TempPathFactory) -> PageRuns:
    return PageRuns(tmp_path_factory)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_code_block(block: Block, page_runs: PageRuns) -> None:
    if block.not_run is not None:
        pytest.skip(f"{block.id} ({block.lang}) not run: {block.not_run}")
    if block.file is not None:
        source = (ROOT / block.page).parent / block.file
        assert source.is_file(), f"{block.id} includes {block.file}, which does not exist"
        assert block.code == source.read_text(), f"{block.id} differs from {block.file}"
        return
    assert block.lang in KINDS, (
        f"{block.id}: a ```{block.lang} block is neither run nor marked <!-- not run: why -->"
    )
    if block.lang in C and shutil.which("cc") is None:
        pytest.skip(f"{block.id} (c) not run: no C compiler (cc)")
    result = page_runs.result(block)
    assert result.ok, f"{block.id} failed:\n{result.got}\n{result.error}"
    want = expected(block)
    assert compare(want, result.got), (
        f"{block.id} printed something else.\n--- the page says:\n{want}--- it printed:\n{result.got}"
    )


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", text, re.S)
    assert commands[0].endswith("nspv2 demo")
    assert "-m pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pytest" in commands[1] and "README.md" in ci


def test_every_doc_link_resolves() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+\.(?:md|py))\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_docs_name_no_missing_source_file() -> None:
    for page in DOCS.glob("*.md"):
        for path in re.findall(
            r"`((?:native_stub|nspv2|tests)/[\w/.-]+\.(?:c|h|py))`", page.read_text()
        ):
            assert (ROOT / path).exists(), f"{page.name} names missing {path}"


# -- the runner itself, on made-up pages ----------------------------------------------

SAMPLE = """\
# A page

```python
greeting = "hello"
```

<!-- file: presence.py -->
```python
NAME = "alice@example.com"
```

```python
from presence import NAME

print(greeting, NAME)
```

```output
hello alice@example.com
```

```sh
nspv2 --help | head -n 1
python -c 'import sys; print(sys.prefix == sys.base_prefix)'
```

```output
usage: nspv2 ...
False
```

```console
$ cat presence.py
NAME = "alice@example.com"
```

```pycon
>>> greeting.upper()
'HELLO'
```

<!-- not run: an example of the marker -->
```sh
exit 3
```

```python
raise KeyError("boom")
```
"""


def test_parse_folds_output_blocks_and_reads_markers() -> None:
    blocks = parse(SAMPLE, "sample.md")
    assert [(b.line, b.lang) for b in blocks] == [
        (3, "python"),
        (8, "python"),
        (12, "python"),
        (22, "sh"),
        (32, "console"),
        (37, "pycon"),
        (43, "sh"),
        (47, "python"),
    ]
    assert blocks[1].file == "presence.py"
    assert blocks[2].want == "hello alice@example.com\n"
    assert blocks[6].not_run == "an example of the marker"
    assert expected(blocks[4]) == 'NAME = "alice@example.com"\n'
    assert expected(blocks[0]) == ""
    with pytest.raises(ValueError, match=r"sample\.md:3: an output block must follow"):
        parse("text\n\n```output\nx\n```\n", "sample.md")
    with pytest.raises(ValueError, match="unclosed"):
        parse("```python\nprint(1)\n", "sample.md")


def test_compare_is_exact_but_for_trailing_space_and_ellipsis() -> None:
    assert compare("a 1\nb\n", "a 1  \nb\n\n")
    assert not compare("a 1\nb\n", "a 2\nb\n")
    assert not compare("a 1\n", "a 1\nb\n")  # an extra line is a difference
    assert not compare("", "anything\n")  # no output block: must print nothing
    assert compare("took ...s\n", "took 0.25s\n")
    assert compare("first\n...\nlast\n", "first\nx\ny\nlast\n")


def test_runner_runs_a_page_in_order_in_its_own_folder(tmp_path: Path) -> None:
    blocks = parse(SAMPLE, "sample.md")
    cwd = tmp_path / "page"
    cwd.mkdir()
    results = run_in_child(blocks, cwd)
    assert sorted(results) == [3, 12, 22, 32, 37, 47]  # neither the file nor the skipped block
    for block in blocks[:6]:
        if block.line in results:
            result = results[block.line]
            assert result.ok, result.error
            assert compare(expected(block), result.got), (block.id, result.got)
    assert (cwd / "presence.py").read_text() == 'NAME = "alice@example.com"\n'
    failed = results[47]
    assert not failed.ok and 'File "sample.md", line 48' in failed.error
    assert "KeyError: 'boom'" in failed.error


def test_runner_reports_what_differs(tmp_path: Path) -> None:
    page = SAMPLE.replace("hello alice@example.com", "hello bob@example.com").replace(
        "'HELLO'", "'hello'"
    )
    blocks = parse(page, "sample.md")
    results = run_in_child(blocks, tmp_path)
    assert not compare(blocks[2].want or "", results[12].got)
    assert results[12].got == "hello alice@example.com\n"
    assert not results[37].ok and "Expected:\n    'hello'\nGot:\n    'HELLO'" in results[37].error
    shell = parse("```sh\nfalse\necho after\n```\n", "s.md")
    [result] = run_in_child(shell, tmp_path).values()
    assert not result.ok and result.got == "" and result.error == "exit status 1"
