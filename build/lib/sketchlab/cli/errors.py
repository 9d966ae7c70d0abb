"""One clear line for user errors in the command-line tools, and a full traceback for bugs.

A *user error* is a mistake the user can fix from its message alone: a bad config value or override,
an unknown config group choice, a missing file or checkpoint, an unknown MLflow run. The tools print
it as ``error: <message>`` on stderr (any detail on indented lines below) and exit with status 2.
Anything else is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of user
errors too.

Wiring, for a Hydra tool::

    @hydra.main(...)
    @hydra_task               # inside the job: classify while the traceback is at hand
    def _hydra_main(cfg): ...

    @entry_point              # around Hydra: config composition errors happen before any job
    def main() -> None:
        _hydra_main()

What counts as a user error: see :func:`user_error_message`. Code that detects a user mistake should
raise :class:`~sketchlab.validation.ConfigValueError` (a config value, naming its key), ``ValueError``
or ``FileNotFoundError`` from sketchlab code, or :class:`UserError` (anything else).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("sketchlab.cli")

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 2  # as argparse exits for a bad command line
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"


class UserError(Exception):
    """A mistake the user can fix from the message alone; the tools print it without a traceback.

    :func:`hydra_task` also re-raises user errors of other types as ``UserError`` (the original as its
    ``__cause__``): it pickles with its message, so it survives launchers that run jobs in other processes.
    """


def _always_user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are user errors wherever they are raised."""
    from hydra import errors as hydra_errors
    from omegaconf import errors as oc

    from sketchlab.data.download import DownloadError
    from sketchlab.engine.trainer import TrainingDiverged
    from sketchlab.registry import ConfigError
    from sketchlab.validation import ConfigValueError

    return (
        UserError, ConfigValueError, ConfigError,
        # RuntimeErrors with a message that says what to do (go online / place the file; lower optim.lr)
        DownloadError, TrainingDiverged,
        FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
        # Hydra: overrides that don't parse, unknown group choices (MissingConfigException), bad keys
        hydra_errors.ConfigCompositionException, hydra_errors.OverrideParseException,
        hydra_errors.SearchPathException,
        # OmegaConf: missing (???) or unknown keys, values of the wrong type, broken interpolations
        oc.MissingMandatoryValue, oc.ConfigKeyError, oc.ConfigAttributeError, oc.KeyValidationError,
        oc.ValidationError, oc.InterpolationResolutionError, oc.GrammarParseError,
    )


def _raised_in(exc: BaseException, prefix: str) -> bool:
    """Whether the innermost frame of ``exc`` lies in a module named ``prefix...``."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith(prefix)


def _missing_mlflow_resource(exc: BaseException) -> bool:
    """An MLflow lookup of a run/experiment that does not exist (checked without importing mlflow)."""
    module = sys.modules.get("mlflow.exceptions")
    return (module is not None and isinstance(exc, module.MlflowException)
            and getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST")


def user_error_message(exc: BaseException) -> str | None:
    """The message to show for a user error, or None when ``exc`` is a bug (which keeps its traceback).

    User errors: :class:`UserError`, ``sketchlab.validation.ConfigValueError``,
    ``sketchlab.registry.ConfigError``, ``sketchlab.data.download.DownloadError``,
    ``sketchlab.engine.trainer.TrainingDiverged``, ``FileNotFoundError`` / ``NotADirectoryError`` /
    ``IsADirectoryError`` / ``PermissionError``, Hydra's ``ConfigCompositionException`` (which includes
    ``MissingConfigException``), ``OverrideParseException`` and ``SearchPathException``, OmegaConf's
    errors for missing/unknown keys, mistyped values and broken interpolations, MLflow's
    ``RESOURCE_DOES_NOT_EXIST``, and any ``ValueError`` raised by sketchlab code itself (a ``ValueError``
    from inside torch or numpy is a bug). Hydra's ``InstantiationException`` is judged by its cause: the
    error the component's constructor raised, or a ``TypeError`` from calling it with a key it does not
    take (``+trainer.foo=1``).
    """
    from hydra.errors import (CompactHydraException, InstantiationException, MissingConfigException,
                              OverrideParseException)
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, InstantiationException):
        cause = exc.__cause__
        if isinstance(cause, TypeError) and _raised_in(cause, "hydra."):
            # the call itself failed: the config node passes a key the component does not take
            where = [line for line in str(exc).splitlines() if line.startswith("full_key:")]
            return "\n".join([str(cause), *where])
        return user_error_message(cause) if cause is not None else None
    if not (isinstance(exc, _always_user_errors()) or (isinstance(exc, ValueError) and _raised_in(exc, "sketchlab."))
            or _missing_mlflow_resource(exc)):
        return None
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OverrideParseException) and getattr(exc, "override", None):
        message = f"cannot parse override '{exc.override}': {message}"
    if isinstance(exc, MissingConfigException) and getattr(exc, "options", None):
        message = message.split("\nConfig search path:")[0]  # the options are listed; the search path is noise
    if isinstance(exc, CompactHydraException) and isinstance(exc.__cause__, OmegaConfBaseException):
        message += "\n" + str(exc.__cause__)  # as Hydra shows them: the cause holds the key's details
    return message


def format_error(message: str) -> str:
    """``error: <first line>``, any further non-blank lines indented below it."""
    lines = [line.rstrip().replace("\t", "  ") for line in message.strip().splitlines() if line.strip()]
    head, *rest = lines or [""]
    return "\n".join([f"error: {head}", *(f"  {line}" for line in rest)])


def _full_error() -> bool:
    return os.environ.get(FULL_ERROR_ENV) == "1"  # Hydra's own test of the variable


def _log_failed_job(message: str) -> None:
    """In a multirun, name the failing job in its log: the tool reports only the sweep's first failure."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        log.error("job %s (%s) failed: %s", hc.job.num, hc.job.override_dirname, message.splitlines()[0])


def hydra_task(task: F) -> F:
    """Wrap a Hydra task function: user errors leave it as :class:`UserError`, bugs unchanged.

    Classifying here, inside the job, sees the real traceback even when a launcher runs the job in
    another process (only the exception object travels back, without its traceback or cause).
    """

    @functools.wraps(task)  # Hydra unwraps __wrapped__ to name the job after the task's module
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except Exception as exc:
            message = user_error_message(exc)
            if message is None:
                raise
            _log_failed_job(message)
            if isinstance(exc, UserError):
                raise
            raise UserError(message) from exc

    return run  # type: ignore[return-value]


def entry_point(main: F) -> F:
    """Wrap a console entry point: a user error prints one ``error:`` line and exits with status 2.

    Hydra catches what escapes the task function and prints a partial traceback itself, unless
    ``HYDRA_FULL_ERROR=1``; so the variable is set while ``main`` runs and Hydra re-raises to here,
    where user errors are told apart. With the variable set by the user, every error keeps its traceback.
    """

    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> Any:
        full = _full_error()
        previous = os.environ.get(FULL_ERROR_ENV)
        os.environ[FULL_ERROR_ENV] = "1"
        try:
            return main(*args, **kwargs)
        except Exception as exc:
            message = None if full else user_error_message(exc)
            if message is None:
                raise
            sys.stdout.flush()  # Hydra's log lines first, then the error
            print(format_error(message), file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        finally:
            if previous is None:
                os.environ.pop(FULL_ERROR_ENV, None)
            else:
                os.environ[FULL_ERROR_ENV] = previous

    return run  # type: ignore[return-value]
