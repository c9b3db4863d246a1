"""The one exception hierarchy of autocnnp.

User mistakes raise an ``AutocnnpError`` subclass; the CLI prints its message and exits with
``exit_code`` (no traceback unless ``AUTOCNNP_FULL_ERROR=1``). Anything else is a bug and shows
its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class AutocnnpError(Exception):
    """Base class of every error autocnnp reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        if self.remedy:
            return f"{self.message}\n  remedy: {self.remedy}"
        return self.message


@dataclass(frozen=True)
class ConfigProblem:
    """One problem found in a config file, located by file and line."""

    file: Path | str
    line: int | None
    element: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        element = f" <{self.element}>:" if self.element else ""
        return f"{where}:{element} {self.message}"


class ConfigError(AutocnnpError):
    """A config file is not valid; carries every problem found, not only the first."""

    exit_code = 2

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PluginError(AutocnnpError):
    """A plugin could not be loaded or does not fit the interface it claims."""

    exit_code = 2

    def __init__(self, plugin: str, message: str, *, remedy: str | None = None) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin}: {message}", remedy=remedy)


class BindingError(AutocnnpError):
    """The assembled component tree has a missing or mistyped binding."""

    exit_code = 2


class EnvironmentProblemError(AutocnnpError):
    """Something the job needs is missing from this machine (MPI, Horovod, docker...)."""

    exit_code = 3


class DataError(AutocnnpError):
    """Input data (images, masks, volumes) cannot be used as given."""

    exit_code = 2


class JobFailedError(AutocnnpError):
    """A launched job failed; names the first failing rank and host when known.

    ``exit_code`` is 1, or the exit code of the rank's own error when the rank reported a
    user error (4 when training diverged, 2 for data...), so that scripts can tell them apart.
    """

    exit_code = 1

    def __init__(self, message: str, *, rank: int | None = None, host: str | None = None,
                 remedy: str | None = None, exit_code: int | None = None) -> None:
        self.rank = rank
        self.host = host
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__(message, remedy=remedy)
