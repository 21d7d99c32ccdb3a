"""The rule engine: named rules that yield violations and never raise.

A rule is a small function `(cfg, ctx) -> Iterable[Violation]` registered with
`@rule(id, severity)`. All rules run; all violations are reported together.
A rule that raises is a bug in slmc: the engine turns it into an error
violation naming the rule, so one broken rule cannot hide the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Violation:
    """One broken constraint: what, where (config paths) and how to fix it."""

    rule: str
    severity: Severity
    paths: tuple[str, ...]
    message: str
    fix: str

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "paths": list(self.paths),
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    check: Callable
    doc: str = ""

    def violation(self, paths: Iterable[str], message: str, fix: str, severity: Severity | None = None) -> Violation:
        return Violation(self.id, severity or self.severity, tuple(paths), message, fix)


@dataclass
class Registry:
    rules: dict[str, Rule] = field(default_factory=dict)

    def add(self, r: Rule) -> None:
        assert r.id not in self.rules, f"duplicate rule id {r.id}"
        self.rules[r.id] = r


REGISTRY = Registry()


def rule(rule_id: str, severity: Severity = "error"):
    """Register a rule. The function receives (rule, cfg, ctx) and yields Violations via rule.violation(...)."""

    def register(fn: Callable) -> Callable:
        REGISTRY.add(Rule(rule_id, severity, fn, (fn.__doc__ or "").strip()))
        return fn

    return register


def run_rules(cfg, ctx=None, only: Iterable[str] | None = None) -> list[Violation]:
    """Run every registered rule (or `only` those ids) and collect all violations."""
    from . import catalogue  # noqa: F401  (importing registers the rules)
    from .context import CheckContext

    selected = [REGISTRY.rules[i] for i in only] if only is not None else list(REGISTRY.rules.values())
    found: list[Violation] = []
    if ctx is None:
        ctx = CheckContext.from_config(cfg)  # reads local files once; records problems, never raises
    for r in selected:
        try:
            found.extend(_collect(r, cfg, ctx))
        except Exception as exc:  # a rule must never hide the others
            found.append(r.violation((), f"rule crashed: {type(exc).__name__}: {exc}", "report this as a bug in slmc", "error"))
    order = {"error": 0, "warning": 1}
    return sorted(found, key=lambda v: (order[v.severity], v.rule))


def _collect(r: Rule, cfg, ctx) -> Iterator[Violation]:
    yield from r.check(r, cfg, ctx) or ()
