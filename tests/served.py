"""Start ``nspv2 serve`` as a real provider process for a test, and always
end it: :mod:`nspv2.testing.served` (what the ``nspv2_served`` fixture
uses), run from a folder outside the checkout by default, so that the
installed package is what serves.

``serving(spec, *args, timeout=20.0, env=None, runtime_dir=None,
preexec=(), cwd=None, install=True)`` installs a Python provider in the
server's catalog (the test's own, tests/conftest.py) unless installed, and
yields a ``Served`` (proc, pid, socket, runtime_dir, log_path, env, log(),
wait_log(), count_log(), stop(), client()) once the server listens;
SIGTERM then SIGKILL, its folders removed and what it installed uninstalled,
afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from nspv2.testing.served import Served, ServeFailed, private_folder, stop_process
from nspv2.testing.served import serving as _serving

from .clirun import OUTSIDE

__all__ = ["ServeFailed", "Served", "private_folder", "serving", "stop_process"]


@contextlib.contextmanager
def serving(
    spec: str = "nspv2.examples.email:EmailDirectory",
    *args: str,
    timeout: float = 20.0,
    env: dict[str, str] | None = None,
    runtime_dir: Path | None = None,
    preexec: Sequence[str] = (),
    cwd: str | os.PathLike[str] | None = None,
    python: str = sys.executable,
    install: bool = True,
) -> Iterator[Served]:
    """nspv2.testing.served.serving, from a folder outside the checkout."""
    with _serving(
        spec,
        *args,
        timeout=timeout,
        env=env,
        runtime_dir=runtime_dir,
        preexec=preexec,
        cwd=OUTSIDE if cwd is None else cwd,
        python=python,
        install=install,
    ) as served:
        yield served
