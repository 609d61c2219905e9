"""Errors that dlpipe reports to the user, each with its own exit code.

Core code raises these and never prints-and-continues; the CLI turns one into a
single message (what went wrong, which file or key, what to do) and exits with
``exit_code``. Exit codes 0, 1 and 2 keep their usual meaning (success, an
unexpected internal error, a command-line usage error from Typer).
"""

from __future__ import annotations


class DlpipeError(Exception):
    """Base class: a failure the user can act on.

    Args:
        message: what went wrong, naming the file or key involved.
        hint: what the user can do about it (optional).
    """

    exit_code = 1
    title = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:
        # Keeps the hint when the error crosses a process boundary (an engine's worker raising it).
        return (self.__class__, (self.message, self.hint))


class ConfigError(DlpipeError):
    """params.yaml or a --set override is invalid (type, range, unknown or missing key)."""

    exit_code = 3
    title = "invalid configuration"


class InputDataError(DlpipeError):
    """The user's data is unusable: missing source, empty dataset, too many bad items."""

    exit_code = 4
    title = "unusable input data"


class ArtifactError(DlpipeError):
    """An artifact from an earlier stage is missing, incomplete or inconsistent with its sidecar."""

    exit_code = 5
    title = "artifact problem"


class DependencyError(DlpipeError):
    """Something dlpipe needs from outside is unavailable (pretrained weights, an optional package)."""

    exit_code = 6
    title = "missing dependency"


class StorageError(DlpipeError):
    """An output could not be written: disk full, quota exceeded, read-only filesystem, or no permission."""

    exit_code = 7
    title = "cannot write"


# The table the README documents; kept here so the two cannot drift apart (a test checks it).
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected internal error (run again with --verbose for the traceback)",
    2: "command-line usage error (unknown option, missing argument)",
    ConfigError.exit_code: "invalid configuration: params.yaml or --set (the message names the key)",
    InputDataError.exit_code: "unusable input data: missing or empty source, too many rejected items",
    ArtifactError.exit_code: "an earlier stage's artifact is missing, incomplete or inconsistent",
    DependencyError.exit_code: "a dependency is unavailable (e.g. pretrained weights offline)",
    StorageError.exit_code: "an output could not be written: disk full, quota, read-only or no permission (the message names the path)",
    8: "dlpipe doctor found a problem (each is listed with what to do)",
    130: "interrupted (Ctrl-C); finished artifacts are kept, partial ones are discarded",
}
