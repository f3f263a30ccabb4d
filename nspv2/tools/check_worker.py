"""One rule of ``nspv2 check`` in a child process: load the provider afresh,
run that rule, report over a pipe.

The parent (:mod:`nspv2.tools.check_isolated`) starts one such process per
rule. One JSON object per line on the report pipe (this process's stdout, as
the parent started it; everything else printed here goes to stderr), in
this order::

    {"event": "step", "rule": NAME, "what": TEXT}   the check starts on TEXT for rule NAME
                                                    (rule "" while loading the provider)
    {"event": "rule", "row": {...}}                 the row is final (Rule.as_dict)
    {"event": "escapes", "items": [TEXT, ...]}      what escaped the provider's slots here
    {"event": "fork", "pid": PID}                   the provider called os.fork
    {"event": "exit", "code": N}                    the provider called os._exit(N)
    {"event": "error", "kind": K, "message": M, "traceback": T}
    {"event": "done"}

The rule is final only when its row arrives: if this process hangs or dies,
the parent kills it and turns what it saw into the rule's row. faulthandler
writes where a fatal signal struck to the file the parent named.

The rules this process keeps: only the process that started the check
reports; a process forked by the provider ends at once (``os._exit``)
without running anything, so it cannot go on with the check; the parent
kills this process's whole group when the rule ends, so nothing it started
outlives it.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import traceback
from typing import Any, NoReturn

from ..host.native import NativeHostUnavailable
from .check import CheckError, EscapeWatch, Rule
from .check_registry import rule_function
from .check_target import TargetSpec

__all__ = ["FORKED_CHILD_STATUS", "main"]

#: The status a process forked by the provider ends with, at once.
FORKED_CHILD_STATUS = 70

_real_exit = os._exit


class _Reporter:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid = os.getpid()
        self.lock = threading.Lock()

    def send(self, event: str, **fields: Any) -> None:
        if os.getpid() != self.pid:  # a fork the hooks did not see (e.g. libc's fork)
            _real_exit(FORKED_CHILD_STATUS)
        data = (json.dumps({"event": event, **fields}) + "\n").encode()
        with self.lock:
            while data:
                data = data[os.write(self.fd, data) :]


def _guard_process(report: _Reporter) -> None:
    """Report os._exit and os.fork by the provider; end forked children at once."""

    def reported_exit(status: int) -> NoReturn:
        try:
            report.send("exit", code=status)
        finally:
            _real_exit(status)

    os._exit = reported_exit
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=lambda: report.send("fork", pid=os.getpid()),
            after_in_child=lambda: _real_exit(FORKED_CHILD_STATUS),
        )


def main(config_text: str) -> NoReturn:
    config = json.loads(config_text)
    # the report keeps the pipe; prints (ours, the provider's) go to stderr
    report = _Reporter(os.dup(sys.stdout.fileno()))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with open(config["fault_file"], "w") as faults:  # kept open: faulthandler writes to it
        faulthandler.enable(file=faults, all_threads=True)
        _guard_process(report)
        watch = EscapeWatch()
        try:
            spec = TargetSpec.from_dict(config["target"])
            name = str(config["rule"])
            function = rule_function(name)

            where = [""]

            def at(rule: str, what: str) -> None:
                where[0] = what
                report.send("step", rule=rule, what=what)

            report.send("step", rule="", what=f"loading {spec.label}")
            with watch:
                target = spec.load()
                try:
                    row = function(target, at)
                except Exception as exc:  # the rule's failure, where it struck
                    row = Rule(name)
                    row.fail(f"the check stopped in {where[0]}: {type(exc).__name__}: {exc}")
                at(name, "closing the provider")
                try:
                    target.close()
                except Exception as exc:
                    row.fail(f"closing the provider failed: {type(exc).__name__}: {exc}")
                report.send("rule", row=Rule.as_dict(row))
        except CheckError as exc:
            kind = "usage" if exc.usage else "provider"
            report.send("error", kind=kind, message=str(exc), traceback=traceback.format_exc())
        except NativeHostUnavailable as exc:
            report.send("error", kind="host", message=str(exc), traceback=traceback.format_exc())
        except Exception as exc:
            report.send(
                "error",
                kind="exception",
                message=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
        report.send("escapes", items=watch.evidence())
        report.send("done")
        sys.stdout.flush()
        sys.stderr.flush()
        # no interpreter shutdown: a provider's threads or its host cannot hold us
        _real_exit(0)
