"""One base exception and a few subclasses, each carrying what, where and how to fix.

The CLI turns any `SlmcError` into a message and its exit code (no traceback): 2 for
config and check errors, 1 for a failing stage, 3 for a failed regression gate, 75
for a busy run folder; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SlmcError(Exception):
    """Base of every error slmc reports to a person."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        text = self.message
        if self.where:
            text = f"{self.where}: {text}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class ConfigError(SlmcError):
    """The configuration does not compose or does not match its schema."""


class CheckFailed(SlmcError):
    """One or more rules reported an error-severity violation."""

    def __init__(self, violations):
        self.violations = list(violations)
        errors = [v for v in self.violations if v.severity == "error"]
        listing = "".join(f"\n  {v.rule} ({', '.join(v.paths)}): {v.message}" for v in errors)
        super().__init__(f"{len(errors)} rule violation(s); nothing was run{listing}")


class PlanError(SlmcError):
    """The stage plan is inconsistent (an input that no earlier stage produces)."""


class StageError(SlmcError):
    """A stage failed while executing; names the stage and the ones before it."""

    exit_code = 1


class GateFailed(SlmcError):
    """The new bundle regressed against targets.baseline beyond a tolerance (the bundle is kept)."""

    exit_code = 3  # distinct from a failing stage (1) and a bad config (2): CI can tell a regression apart


class OutputPathError(SlmcError):
    """An output path would escape the run folder or cannot be written."""


class FolderBusy(SlmcError):
    """Another slmc process is writing the same run folder."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure; the same command may be retried
