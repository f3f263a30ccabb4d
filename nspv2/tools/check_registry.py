"""The rules of ``nspv2 check``, in the order they are run and reported.

:data:`RULES` pairs each rule's name with its function
``rule(t: CheckTarget, at: Step) -> Rule``; :data:`RULE_NAMES` is the report's
order: the ESCAPED row first (made from what every rule's process saw, not a
function of its own), then the rules as run. Today's rules come from
:mod:`nspv2.tools.check`, except MALFORMED and ENDED_HANDLE, whose stricter
bodies (query set untouched; cancellation codes accepted) run, under those
names, among the rules added with native providers (:mod:`nspv2.tools.rules`). The list lives apart from both modules so that the
rules can import ``Rule`` and ``Step`` from ``check`` without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable

from .check import (
    END,
    ESCAPED,
    FLUSH,
    INSIDE,
    OPTIONAL,
    SESSIONS,
    SIZES,
    Rule,
    Step,
    rule_end,
    rule_flush,
    rule_inside,
    rule_optional,
    rule_sessions,
    rule_sizes,
)
from .check_target import CheckTarget
from .rules import NEW_RULES

__all__ = ["RULES", "RULE_NAMES", "RuleFunction", "rule_function"]

RuleFunction = Callable[[CheckTarget, Step], Rule]

#: Every rule but ESCAPED, in the order they run (each in its own process).
RULES: tuple[tuple[str, RuleFunction], ...] = (
    (OPTIONAL, rule_optional),
    (SIZES, rule_sizes),
    (FLUSH, rule_flush),
    (END, rule_end),
    (INSIDE, rule_inside),
    (SESSIONS, rule_sessions),
    *NEW_RULES,
)

#: The rows of the report, in order.
RULE_NAMES: tuple[str, ...] = (ESCAPED, *(name for name, _ in RULES))


def rule_function(name: str) -> RuleFunction:
    """The function of the rule called ``name`` (KeyError if none)."""
    for known, function in RULES:
        if known == name:
            return function
    raise KeyError(name)
