"""Deterministic errors end a torchrun job instead of restarting it.

`torchrun --max-restarts N` restarts the whole worker group after any worker fails, N times.
That is right for a lost host or a flaky link, and wrong for a batch with an id outside its
table, a plan that does not fit or a corrupt profile: the restarted job reads the same input and
fails the same way, N more times, and the error is printed N+1 times between restarts.
TorchElastic's agent has no notion of a non-retryable error; what it does honour is a
termination signal, on which it stops its workers and exits with an error, without restarting.

`no_restart_on(...)` (a context manager and a decorator for the training entry point) lets such
an error leave the worker as it is, after printing it and sending SIGTERM to the worker's
torchrun agent (its parent process) when restarts are left (torchrun then exits with its own
`SignalException: ... got signal: 15` below the worker's error); it does nothing outside
torchrun or when no restart is left (the agent then ends the job anyway). Every rank of a DMP
job raises the same `BadBatchError` for a bad id on any rank (`sharding/agree.py`), so every
host's agent is told.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from types import TracebackType

from torchrec_hot.data.chunk import IdOutOfRangeError
from torchrec_hot.planner.hot_plan import PlanFormatError
from torchrec_hot.planner.placement import PlanDoesNotFitError
from torchrec_hot.profiling.io import ProfileFormatError
from torchrec_hot.sharding.agree import BadBatchError

# Errors that a restart with the same input and configuration raises again.
DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (
    BadBatchError,
    IdOutOfRangeError,
    PlanDoesNotFitError,
    PlanFormatError,
    ProfileFormatError,
)


def restarts_left() -> int | None:
    """Restarts torchrun's agent still has for this worker group, None outside torchrun."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    total = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    return total - int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def stop_elastic_restarts(error: BaseException) -> bool:
    """Tell this worker's torchrun agent (the parent process) to stop instead of restarting
    the job after `error`; True when it was told. Outside torchrun, or with no restart left,
    does nothing and returns False."""
    left = restarts_left()
    if left is None or left <= 0:
        return False
    agent = os.getppid()
    # The agent terminates its workers on the signal, before this error would be printed.
    traceback.print_exception(error, file=sys.stderr)
    print(
        f"torchrec-hot: {type(error).__name__} would fail again on restart; stopping the "
        f"torchrun agent (pid {agent}) instead of using its {left} restart(s) left: {error}",
        file=sys.stderr,
        flush=True,
    )
    os.kill(agent, signal.SIGTERM)
    return True


class no_restart_on(contextlib.ContextDecorator):  # noqa: N801 (used like contextlib's)
    """`with no_restart_on(): train()` or `@no_restart_on()` on the entry point: an error of
    the given types (default `DETERMINISTIC_ERRORS`) propagates unchanged, and under torchrun
    with restarts left the job ends instead of restarting (see the module docstring)."""

    def __init__(self, *errors: type[BaseException]) -> None:
        self.errors = errors or DETERMINISTIC_ERRORS

    def __enter__(self) -> no_restart_on:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is not None and isinstance(exc, self.errors):
            stop_elastic_restarts(exc)
        return False
