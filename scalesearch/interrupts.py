"""A Ctrl-C that Python drops inside a garbage-collection callback is not lost.

``redeliver_interrupts`` wraps ``sys.unraisablehook`` (``scalesearch.cli.main`` installs
it); ``raise_pending_interrupt`` is the main thread's checkpoint (each trial, each command's
end).
"""

from __future__ import annotations

import _thread
import threading
import time


class _InterruptRedelivery:
    """A Ctrl-C that Python dropped, handed back to the main thread exactly once.

    Python raises KeyboardInterrupt wherever the main thread is when the signal lands.  If
    that is a callback Python cannot raise from (a weakref's, during garbage collection),
    it prints "Exception ignored in ..." with a traceback and drops the interrupt, so the
    search would go on as if nobody had pressed Ctrl-C.  ``hook`` (an
    ``sys.unraisablehook``) prints nothing for it and marks it pending; it is raised again
    in the main thread by whichever comes first:

    * a helper thread that calls ``_thread.interrupt_main`` a moment after the hook has
      returned (raised inside the hook, it would be dropped again), whenever the scheduler
      runs it: there is no deadline to miss;
    * ``raise_pending``, called by the main thread at safe points (after each trial, and
      when a command ends), which needs no other thread at all.

    A lock makes the two exclusive, so one dropped Ctrl-C is raised once.
    """

    def __init__(self, default_hook) -> None:  # noqa: ANN001
        self.default_hook = default_hook
        self.lock = threading.Lock()
        self.pending = False
        self.thread: threading.Thread | None = None  # the last delivery thread (tests join it)

    def hook(self, unraisable) -> None:  # noqa: ANN001
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            self.default_hook(unraisable)
            return
        with self.lock:
            self.pending = True
        self.thread = threading.Thread(target=self._deliver, name="scalesearch-interrupt", daemon=True)
        self.thread.start()

    def _deliver(self) -> None:
        time.sleep(0.01)  # let the hook return first; a later start only delays delivery
        with self.lock:
            if not self.pending:
                return  # raise_pending got there first
            self.pending = False
        _thread.interrupt_main()

    def raise_pending(self) -> None:
        with self.lock:
            if not self.pending:
                return
            self.pending = False
        raise KeyboardInterrupt


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
