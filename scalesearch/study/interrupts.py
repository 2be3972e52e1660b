"""A Ctrl-C that Python drops inside a garbage-collection callback is not lost.

``redeliver_interrupts`` wraps ``sys.unraisablehook`` (``scalesearch.cli.main.main`` installs
it); ``raise_pending_interrupt`` is the main thread's checkpoint (each trial, each command's
end).
"""

from __future__ import annotations

import _thread
import threading
import time


class _InterruptRedelivery:
    """A Ctrl-C that Python dropped, handed back to the main thread until it is caught.

    Python raises KeyboardInterrupt wherever the main thread is when the signal lands.  If
    that is a callback Python cannot raise from (a weakref's, during garbage collection),
    it prints "Exception ignored in ..." with a traceback and drops the interrupt, so the
    search would go on as if nobody had pressed Ctrl-C.  ``hook`` (an
    ``sys.unraisablehook``) prints nothing for it and marks it pending; it is raised again
    in the main thread by whichever comes first:

    * a helper thread that calls ``_thread.interrupt_main`` once the hook has returned
      (raised inside the hook it would be dropped again, for good: so the thread waits
      for the hook to finish, however late the scheduler runs either of them);
    * ``raise_pending``, called by the main thread at safe points (after each trial, and
      when a command ends), which needs no other thread at all.

    A delivered interrupt stays outstanding until ``acknowledge`` (the command caught it):
    should it still be lost on the way, the next checkpoint raises it.  A lock keeps the
    states consistent, so one dropped Ctrl-C is raised once.
    """

    def __init__(self, default_hook) -> None:  # noqa: ANN001
        self.default_hook = default_hook
        self.lock = threading.Lock()
        self.pending = False       # dropped, not yet handed back
        self.outstanding = False   # handed back by the thread, not yet caught
        self.in_hook = False
        self.thread: threading.Thread | None = None  # the last delivery thread (tests join it)

    def hook(self, unraisable) -> None:  # noqa: ANN001
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            self.default_hook(unraisable)
            return
        self.in_hook = True
        try:
            with self.lock:
                self.pending = True
            self.thread = threading.Thread(target=self._deliver, name="scalesearch-interrupt", daemon=True)
            self.thread.start()
        finally:
            self.in_hook = False

    def _deliver(self) -> None:
        while self.in_hook:  # the main thread is still in the hook: an interrupt there is lost
            time.sleep(0.001)
        time.sleep(0.001)
        with self.lock:
            if not self.pending:
                return  # raise_pending got there first
            self.pending, self.outstanding = False, True
        _thread.interrupt_main()

    def raise_pending(self) -> None:
        with self.lock:
            if not (self.pending or self.outstanding):
                return
            self.pending = self.outstanding = False
        raise KeyboardInterrupt

    def acknowledge(self) -> None:
        with self.lock:
            self.pending = self.outstanding = False


_REDELIVERY: _InterruptRedelivery | None = None


def redeliver_interrupts(default_hook):  # noqa: ANN001, ANN201
    """Install-ready ``sys.unraisablehook`` that hands a dropped Ctrl-C back to the main
    thread (see ``_InterruptRedelivery``); ``raise_pending_interrupt`` is its checkpoint."""
    global _REDELIVERY
    _REDELIVERY = _InterruptRedelivery(default_hook)
    return _REDELIVERY.hook


def raise_pending_interrupt() -> None:
    """Raise KeyboardInterrupt here if a Ctrl-C was dropped in a callback and is not yet
    delivered: a checkpoint for the main thread that does not depend on thread scheduling."""
    if _REDELIVERY is not None:
        _REDELIVERY.raise_pending()


def acknowledge_interrupt() -> None:
    """The command caught a KeyboardInterrupt: nothing dropped is left to raise again."""
    if _REDELIVERY is not None:
        _REDELIVERY.acknowledge()

