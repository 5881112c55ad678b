"""Errors caused by user input, and the guard that turns them into a one-paragraph message."""
import sys
import textwrap


class UserError(Exception):
    """An error caused by input (a config, a dataset, a checkpoint, an option), not by a bug."""


class ConfigError(UserError):
    """A config file or override is invalid: unknown key, wrong type, out-of-range value."""


class DatasetError(UserError):
    """A dataset root is missing or does not have the expected layout."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, corrupt or does not fit the model."""


def guard(fn, *args, **kwargs):
    """Run ``fn``; a :class:`UserError` prints ``error: <message>`` on stderr and exits with status 2.

    Other exceptions propagate with their traceback, since they are bugs rather than bad input.
    """
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        msg = ' '.join(str(e).split()) or type(e).__name__
        sys.stderr.write(textwrap.fill(f'error: {msg}', width=100) + '\n')
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write('interrupted\n')
        sys.exit(130)
