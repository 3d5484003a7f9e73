"""Errors the user fixes (a bad setting, a bad file, a full disk, no network), told apart from bugs.

The command line (:mod:`xai_bench.cli`) prints a :class:`UserError` as one line, ``error: <message>``, and exits
with status 2; anything else keeps its traceback. Each class also derives from the built-in a caller would catch
(``ValueError``, ``FileNotFoundError``, ``OSError``), so ``except ValueError`` and ``pytest.raises(ValueError)`` keep
working. Messages name the config field or the file, and the fix.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataMissingError", "DiskFullError", "NoResultsError", "Terminated",
           "UserError", "is_user_error"]


class UserError(Exception):
    """Base of the errors a user fixes; ``str(err)`` is the whole message."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work (``optim.lr=-1``, an unknown corruption, a class id past ``num_classes``)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint folder whose ``model.json`` or ``model.safetensors`` cannot rebuild the model."""


class DataMissingError(UserError, FileNotFoundError):
    """A dataset's files are not where the loader looks."""


class DiskFullError(UserError, OSError):
    """A write failed for lack of space (``ENOSPC``) or quota (``EDQUOT``)."""


class NoResultsError(UserError, FileNotFoundError):
    """A folder given to a reader of finished runs (``xai-report``) that holds no run."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm and Docker send before killing) during a task run: recorded like Ctrl-C."""


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's to fix: a :class:`UserError`, or a ``ValueError``/``KeyError``/``OSError``
    raised by xai-bench's own checks (their messages name the field and the fix), or a network failure. The same
    types raised inside torch or another library are treated as bugs and keep their traceback."""
    if isinstance(exc, UserError):
        return True
    if isinstance(exc, ConnectionError) or type(exc).__name__ in ("URLError", "LocalEntryNotFoundError"):
        return True  # no network (urllib, requests, huggingface_hub offline)
    return isinstance(exc, (ValueError, KeyError, OSError)) and _raised_by_us(exc)


def _raised_by_us(exc: BaseException) -> bool:
    """The innermost frame of ``exc``'s traceback is in the ``xai_bench`` package (a deliberate check)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("xai_bench.")
