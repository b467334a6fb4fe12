"""The one exception type the CLI turns into a one-line message."""

BAD_INPUT = 2
RUNTIME = 1


class DlcliError(Exception):
    """A failure the user can act on: the message says what, where and how to fix it."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT, shared: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.shared = shared  # raised by every rank of a DDP run at once (a signal, a non-finite loss): rank 0 says it


class ConfigError(DlcliError):
    """A config that does not validate: the message names the file or override, the key and the fix."""


class DataError(DlcliError):
    """Data that cannot be read as configured: the message names the file, line or column."""


class TrainingInterrupted(DlcliError):
    """Ctrl-C or SIGTERM stopped a training after saving a checkpoint it can be resumed from."""


def closest(name: str, options) -> str:
    """' (did you mean 'x'?)' for the nearest valid option, or a list of valid ones."""
    import difflib

    options = sorted(str(o) for o in options)
    match = difflib.get_close_matches(str(name), options, n=1, cutoff=0.5)
    if match:
        return f" (did you mean '{match[0]}'?)"
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f" (valid: {shown})"
