"""Stopping a run cleanly: SIGINT (Ctrl-C) and SIGTERM ask the training loop to stop; the loop writes a
checkpoint of the step it reached and raises `Interrupted`; the CLI prints one line and exits with
128 + the signal number (130 for SIGINT, 143 for SIGTERM), the code shells and schedulers expect.

    with handle_signals():          # mbrl.train does this around a run
        algo.run()                  # the loop polls stop_requested() between steps

Anything else may ask for a stop too (`request_stop("SIGUSR1", 138)`: a launcher's preemption hook).
A second SIGINT while the first is being handled raises KeyboardInterrupt at once (the checkpoint
being written is atomic, so the previous one stays whole).
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

_request: Optional[tuple[str, int]] = None


class Interrupted(Exception):
    """Raised by the loop after it saved a checkpoint because a stop was requested."""

    def __init__(self, reason: str, exit_code: int, step: int, checkpoint: Optional[str]):
        self.reason, self.exit_code, self.step, self.checkpoint = reason, exit_code, step, checkpoint
        where = f"checkpoint written to {checkpoint}" if checkpoint else "no run dir, nothing saved"
        super().__init__(f"interrupted by {reason} at step {step}: {where}")


def request_stop(reason: str, exit_code: int = 1) -> None:
    """Ask the running loop to checkpoint and stop at its next step (safe inside a signal handler)."""
    global _request
    if _request is None:
        _request = (reason, int(exit_code))


def stop_requested() -> Optional[tuple[str, int]]:
    """`(reason, exit_code)` if a stop was requested, else None."""
    return _request


def clear() -> None:
    global _request
    _request = None


@contextmanager
def handle_signals(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Turn `signals` into stop requests for the duration of the block (main thread only; elsewhere
    a no-op). The previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ANN001
        name = signal.Signals(signum).name
        if _request is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        request_stop(name, 128 + signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    clear()
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
