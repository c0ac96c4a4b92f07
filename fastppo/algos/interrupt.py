"""Ctrl-C during ``learn``: finish the running iteration, then stop with the model consistent."""

from __future__ import annotations

import signal
import sys
import threading


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C ended learn() between two iterations: the model is consistent (see ``learn``)."""


class InterruptAtIterationEnd:
    """While learn() runs in the main thread with Python's default SIGINT handler: the first Ctrl-C is
    held until the running iteration has finished (``requested``), so that an interrupt never leaves a
    half-collected rollout or a half-updated policy; a second one interrupts at once."""

    def __enter__(self):
        self.requested, self._previous = False, None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)
        sys.stderr.write("\nfastppo: interrupted; stopping after this iteration (Ctrl-C again to stop at once)\n")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
