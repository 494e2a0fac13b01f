"""What a stopped training run raises, so that scripts and schedulers see the truth.

Ctrl-C (SIGINT) and a scheduler's SIGTERM stop :meth:`omnivae.Model.train` cleanly: the model
keeps the best weights so far and stays usable in the session, and then an exception says
what happened. Left uncaught, it ends a script with a non-zero status: 130 for Ctrl-C (as
any Python program), 143 (128 + SIGTERM) for a termination. ``omnivae fit`` and
``omnivae map`` write no outputs after either unless ``--save-on-interrupt`` asks them to.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

INTERRUPT_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
TERMINATE_EXIT_CODE = 143  # 128 + SIGTERM


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the model keeps the weights the message names.

    Subclasses :class:`KeyboardInterrupt`, so code that handles Ctrl-C handles it, and a
    script that does not ends with status 130.

    Examples
    --------
    >>> err = TrainingInterrupted("Training interrupted (Ctrl-C) in epoch 3.")
    >>> isinstance(err, KeyboardInterrupt), err.exit_code, str(err)
    (True, 130, 'Training interrupted (Ctrl-C) in epoch 3.')
    """

    exit_code = INTERRUPT_EXIT_CODE
    signal_name = "SIGINT"
    #: The model trained so far, where the caller did not hold it (``omnivae.tl.integrate``,
    #: ``map_query``); ``None`` otherwise.
    model: Any = None


class TrainingTerminated(SystemExit):
    """SIGTERM (what a scheduler sends before it kills a job) stopped training.

    Subclasses :class:`SystemExit` with status 143, so an uncaught one ends the process with
    the status a scheduler expects from a terminated job; the message is in ``str(err)``.

    Examples
    --------
    >>> err = TrainingTerminated("Training terminated (SIGTERM) in epoch 3.")
    >>> err.code, err.exit_code, str(err)
    (143, 143, 'Training terminated (SIGTERM) in epoch 3.')
    """

    exit_code = TERMINATE_EXIT_CODE
    signal_name = "SIGTERM"
    #: As :attr:`TrainingInterrupted.model`.
    model: Any = None

    def __init__(self, message: str) -> None:
        super().__init__(TERMINATE_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`TrainingTerminated` (so ``finally`` clauses
    run: temporary files are removed) instead of killing the process on the spot; the
    previous handler is restored afterwards. Used by the command line; does nothing outside
    the main thread, where handlers cannot be set.

    Examples
    --------
    >>> import os, signal
    >>> with sigterm_raises():
    ...     try:
    ...         os.kill(os.getpid(), signal.SIGTERM)
    ...     except TrainingTerminated as err:
    ...         print(err.code)
    143
    """
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise TrainingTerminated("Terminated (SIGTERM).")
