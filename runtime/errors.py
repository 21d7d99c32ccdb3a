"""The runtime's own small exception hierarchy (it may not import slmc.errors).

Every error says what went wrong, where (a file or field) and how to fix it, and
renders as one line so the CLI can print it and exit 2 without a traceback.
"""

from __future__ import annotations


class SlmcRuntimeError(Exception):
    """Base of every error the runtime reports to a person."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        """One line: `where: message (fix: ...)`."""
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return " ".join(text.split("\n"))


class BundleError(SlmcRuntimeError):
    """The bundle is unreadable, incomplete or tampered with (never overridable)."""


class IncompatibleBundle(BundleError):
    """The bundle is intact but targets another runtime, machine or ORT version.

    `load_bundle(..., allow_foreign=True)` / `--allow-foreign` overrides this one.
    """


class GenerationError(SlmcRuntimeError):
    """A generation request is invalid (sampling parameter, empty prompt, ...)."""


class GenerationWarning(UserWarning):
    """A request was adjusted to fit the bundle (prompt truncated, max_new_tokens clipped)."""
