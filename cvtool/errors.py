"""One error type of our own: a message, a hint, an exit code. Caught once, in cvtool.cli.main()."""

from __future__ import annotations


class CvtoolError(Exception):
    """An error the user can act on. `main()` prints `error: message` (+ hint) and exits."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(CvtoolError):
    """Impossible or malformed parameters: exit 2, like a command-line usage error."""

    exit_code = 2


class BackendUnavailable(CvtoolError):
    """A backend or device that cannot run here (missing package, no CUDA GPU)."""

    exit_code = 2


class DataError(CvtoolError):
    """Unreadable images, wrong masks, missing files."""

    exit_code = 2


class WriteError(DataError):
    """A file that could not be written (full disk, no permission): exit 2, the path named. The writer's temp file
    is gone and the file that was there before is left as it was (cvtool.fsutil.atomic_path)."""


class TrainingDiverged(CvtoolError):
    """The training loss became NaN/infinite or exploded: exit 3 (not 2: the options were valid, the run
    failed), with the checkpoints written before it left as they were."""

    exit_code = 3
