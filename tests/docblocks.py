"""Run the code blocks of the Markdown docs, the way docs/index.md's
"Examples that run" section describes.

Two halves:

- in the test process: ``parse()`` splits a page into blocks (code, its
  expected output, its markers) and ``compare()`` checks one block's output;
- in a child process (``python tests/docblocks.py SPEC OUT``, cwd a temporary
  folder): ``run_page()`` runs one page's blocks in order, Python blocks in
  one shared namespace, shell blocks with ``bash -e``, and writes what each
  printed to OUT as JSON.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import os
import re
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PYTHON = ("python", "pycon")
SHELL = ("sh", "bash", "console")
C = ("c",)
OUTPUT = "output"
KINDS = (*PYTHON, *SHELL, *C, OUTPUT)

_FENCE = re.compile(r"^(`{3,})([\w+-]*)[ \t]*$")
_MARKER = re.compile(r"^<!--\s*(not run|file):\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    """One fenced code block. ``line`` is the line of its opening fence (1-based)."""

    page: str  # path relative to the repository, e.g. "docs/tutorial.md"
    line: int
    lang: str
    code: str
    want: str | None = None  # the text of the ```output block after it, if any
    not_run: str | None = None  # the reason given in <!-- not run: ... -->
    file: str | None = None  # <!-- file: examples/x.py -->, relative to the page

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def parse(text: str, page: str) -> list[Block]:
    """Every fenced block of a page, each output block folded into the code block before it."""
    lines = text.split("\n")
    blocks: list[Block] = []
    i = 0
    last_end = -2  # index of the closing fence of the previous block
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2)
        j = i + 1
        while j < len(lines) and lines[j] != fence:
            j += 1
        if j == len(lines):
            raise ValueError(f"{page}:{i + 1}: unclosed code block")
        code = "".join(line + "\n" for line in lines[i + 1 : j])
        prev = blocks[-1] if blocks else None
        if lang == OUTPUT:
            between = lines[last_end + 1 : i]
            if prev is None or prev.want is not None or any(s.strip() for s in between):
                raise ValueError(f"{page}:{i + 1}: an output block must follow a code block")
            prev.want = code
        else:
            block = Block(page, i + 1, lang, code)
            marker = _MARKER.match(lines[i - 1]) if i > 0 else None
            if marker and marker.group(1) == "not run":
                block.not_run = marker.group(2)
            elif marker:
                block.file = marker.group(2)
            blocks.append(block)
        last_end = j
        i = j + 1
    return blocks


def console_split(code: str) -> tuple[str, str]:
    """A ```console block: the ``$ `` lines are the commands, the others their output."""
    commands, output = [], []
    for line in code.splitlines(keepends=True):
        if line.startswith("$ "):
            commands.append(line[2:])
        else:
            output.append(line)
    return "".join(commands), "".join(output)


def expected(block: Block) -> str:
    """What the block must print: its output block, the output lines of a
    console block, or nothing."""
    if block.lang == "console":
        return console_split(block.code)[1]
    return block.want or ""


def normalise(text: str) -> str:
    """Trailing whitespace of each line and trailing blank lines do not count."""
    return "\n".join(line.rstrip() for line in text.rstrip().split("\n"))


def compare(want: str, got: str) -> bool:
    """Exact after normalise(), except that ``...`` matches any text (doctest's ELLIPSIS)."""
    want, got = normalise(want), normalise(got)
    return doctest.OutputChecker().check_output(want + "\n", got + "\n", doctest.ELLIPSIS)


# -- the child process -------------------------------------------------------------


@dataclass
class Result:
    line: int
    ok: bool  # ran to the end: no exception, exit status 0, doctest examples passed
    got: str  # what it printed (Python: stdout; shell and C: stdout and stderr)
    error: str  # traceback, exit status, stderr, doctest report


def _run_python(block: Block, namespace: dict[str, Any]) -> Result:
    # Pad with newlines so that tracebacks give the page's own line numbers.
    source = "\n" * block.line + block.code
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(compile(source, block.page, "exec"), namespace)
    except BaseException:
        return Result(block.line, False, out.getvalue(), err.getvalue() + traceback.format_exc())
    return Result(block.line, True, out.getvalue(), err.getvalue())


def _run_pycon(block: Block, namespace: dict[str, Any]) -> Result:
    test = doctest.DocTestParser().get_doctest(
        block.code, namespace, block.id, block.page, block.line
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    runner.run(test, out=report.write, clear_globs=False)
    return Result(block.line, runner.failures == 0, "", report.getvalue())


def _run_shell(block: Block, env: dict[str, str]) -> Result:
    code = console_split(block.code)[0] if block.lang == "console" else block.code
    done = subprocess.run(
        ["bash", "-e", "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=600,
    )
    return Result(block.line, done.returncode == 0, done.stdout, f"exit status {done.returncode}")


def _run_c(block: Block, env: dict[str, str]) -> Result:
    source = Path(f"block_{block.line}.c")
    source.write_text(f'#line {block.line + 1} "{block.page}"\n' + block.code)
    exe = f"./block_{block.line}"
    config = subprocess.run(
        ["nspv2", "config", "--cflags", "--libs"], capture_output=True, text=True, env=env
    )
    if config.returncode != 0:
        return Result(block.line, False, "", "nspv2 config failed:\n" + config.stderr)
    warnings = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
    build = subprocess.run(  # the libraries after the source, as the linker needs
        ["cc", *warnings, "-o", exe, str(source), *config.stdout.split()],
        capture_output=True,
        text=True,
        env=env,
    )
    if build.returncode != 0:
        return Result(block.line, False, "", "does not compile:\n" + build.stderr)
    done = subprocess.run(
        [exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600
    )
    return Result(block.line, done.returncode == 0, done.stdout, f"exit status {done.returncode}")


def run_page(blocks: list[Block]) -> list[Result]:
    """Run a page's blocks in order in the current directory; save file blocks into it."""
    # Like `python -c`: the current directory first on sys.path, not tests/.
    sys.path[0] = ""
    # A plain shell: no settings of the pytest run that runs the docs, 80 columns.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["COLUMNS"] = "80"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    results = []
    for block in blocks:
        if block.not_run is not None:
            continue
        if block.file is not None:
            Path(Path(block.file).name).write_text(block.code)
            continue
        if block.lang == "python":
            results.append(_run_python(block, namespace))
        elif block.lang == "pycon":
            results.append(_run_pycon(block, namespace))
        elif block.lang in SHELL:
            results.append(_run_shell(block, env))
        elif block.lang in C:
            results.append(_run_c(block, env))
    return results


def main(spec: str, out: str) -> None:
    data = json.loads(Path(spec).read_text())
    blocks = [Block(**b) for b in data["blocks"]]
    results = run_page(blocks)
    Path(out).write_text(json.dumps([asdict(r) for r in results]))


def run_in_child(blocks: list[Block], cwd: Path) -> dict[int, Result]:
    """Run one page's blocks in a child process with ``cwd`` as its working folder."""
    spec, out = cwd.with_suffix(".spec.json"), cwd.with_suffix(".out.json")
    spec.write_text(json.dumps({"blocks": [asdict(b) for b in blocks]}))
    done = subprocess.run(
        [sys.executable, __file__, str(spec), str(out)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"the docs runner failed:\n{done.stdout}{done.stderr}")
    results = [Result(**r) for r in json.loads(out.read_text())]
    spec.unlink()
    out.unlink()
    return {r.line: r for r in results}


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
