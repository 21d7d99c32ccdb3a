"""The runtime's own small exception hierarchy (it may not import slmc.errors).

Every error says what went wrong, where (a file or field) and how to fix it, and
renders as one line so the CLI can print it and exit without a traceback.

Exit codes of `slmc run|bench|verify` (and `python -m slmc.runtime`); the ones above 2
follow BSD sysexits.h, so scripts can tell a bad bundle from a broken pipe:

    0    ok (also when a reader such as `head` closes the pipe early)
    2    a refusal or a bad request: bundle, arguments, sampling values, prompt
    66   no input: no --prompt and stdin is closed or cannot be read  (EX_NOINPUT)
    70   the tokenizer library failed on this input (a Rust panic)    (EX_SOFTWARE)
    73   stdout is closed: there is nowhere to write the result       (EX_CANTCREAT)
    74   writing to stdout failed: the disk is full, an I/O error     (EX_IOERR)
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_NO_INPUT = 66
EXIT_TOKENIZER = 70
EXIT_OUTPUT_CLOSED = 73
EXIT_OUTPUT_FAILED = 74
EXIT_INTERRUPTED = 130


class SlmcRuntimeError(Exception):
    """Base of every error the runtime reports to a person."""

    exit_code = EXIT_REFUSED

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


class TokenizerError(SlmcRuntimeError):
    """The tokenizers library failed on an input (it panics in Rust rather than raising)."""

    exit_code = EXIT_TOKENIZER


class InputError(SlmcRuntimeError):
    """The CLI has no prompt: stdin is closed or cannot be read."""

    exit_code = EXIT_NO_INPUT


class OutputError(SlmcRuntimeError):
    """The CLI cannot write its result to stdout (full disk, I/O error)."""

    exit_code = EXIT_OUTPUT_FAILED


class OutputClosed(OutputError):
    """The CLI's stdout is closed (`>&-`): there is nowhere to write the result."""

    exit_code = EXIT_OUTPUT_CLOSED


class GenerationWarning(UserWarning):
    """A request was adjusted to fit the bundle (prompt truncated, max_new_tokens clipped)."""
