"""Ctrl-C during a command: one line, exit code 130, and soon, even when the main thread is inside a long native call.

Python raises ``KeyboardInterrupt`` only when the main thread next runs Python code; inside a Delta write or a Polars
query that can be many seconds. A thread woken by the signal itself (``signal.set_wakeup_fd``) quiets native stderr at once
(a dying command's threads and workers print nothing), hands the signal to the main thread if another thread got it, and
if Python has not taken the interrupt within ``GRACE`` seconds, prints the line and ends the process. That is safe by
design: every write is one Delta commit, so a killed command leaves only files no commit names, and a rerun resumes
(ingestion skips what it committed). The shell takes its own Ctrl-C (it cancels the running statement) and calls
``let_the_caller_handle``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

from citylake.cli import stderr

GRACE = 1.0  # seconds the main thread has to take an interrupt before the process is ended for it
# The kernel hands a process's SIGINT to any thread. Delivered to another one, it interrupts no system call of the main
# thread, and the main thread sleeping in one (readline waiting for a key, in the shell) never runs Python's handler:
# after this long the signal is sent to the main thread itself.
FORWARD_AFTER = 0.05
LINE = "citylake: interrupted; run the command again to resume (what was committed stays, and is not done twice)"

_line = LINE  # what an interrupt says: a command whose rerun does not resume says instead how to go on (``explain``)
_taken = 0  # interrupts Python's handler has raised in the main thread
_reported = threading.Lock()
_armed = True


class Interrupted(BaseException):
    """Ctrl-C, past click's own handler (which prints a blank line and raises ``Abort``)."""


def watch() -> None:
    """Install the handler and the watching thread (the CLI calls it once, from the main thread, before the command)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "set_wakeup_fd"):
        return
    if not os.environ.get("CITYLAKE_DEBUG"):
        sys.unraisablehook = _unraisable
    wake_in, wake_out = os.pipe()
    os.set_blocking(wake_out, False)
    signal.signal(signal.SIGINT, _raise)
    signal.set_wakeup_fd(wake_out, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(wake_in,), name="citylake-interrupts", daemon=True).start()


def let_the_caller_handle() -> None:
    """From now on Ctrl-C is only a ``KeyboardInterrupt`` for the caller to take (the shell cancels a statement with it)."""
    global _armed
    _armed = False


def explain(line: str) -> None:
    """Say ``line`` (whole, from ``citylake:``) instead of ``LINE`` when this command is interrupted."""
    global _line
    _line = line


def report() -> int:
    """Print the one line (once, whoever comes first) and return the exit code for an interrupt."""
    if _reported.acquire(blocking=False):
        stderr.quiet()
        with contextlib.suppress(Exception):
            fd = sys.stderr.fileno()
            os.write(fd, (("\n" if os.isatty(fd) else "") + _line + "\n").encode())
    return 130


def _raise(signum, frame) -> None:
    global _taken
    _taken += 1
    raise KeyboardInterrupt


def _unraisable(unraisable) -> None:
    """An exception Python could not raise (in a destructor, a weakref callback) is noise to a user, printed as "Exception
    ignored in …" with a traceback: dropped. A Ctrl-C that ended there never reached the command, so the watcher ends it."""
    global _taken
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        _taken -= 1


def _watch(wake_in: int) -> None:
    seen = echoes = 0
    while True:
        try:
            woken = os.read(wake_in, 64)
        except OSError:
            return
        for signum in woken:
            if signum != signal.SIGINT:
                continue
            if echoes:  # the wake-up of a signal forwarded below
                echoes -= 1
                continue
            if signal.getsignal(signal.SIGINT) is not _raise:  # a command with its own (`ingest mqtt` flushes, then stops)
                continue
            seen += 1
            if _armed:
                stderr.quiet()
                threading.Timer(GRACE, _end_unless_taken, args=(seen,)).start()
            time.sleep(FORWARD_AFTER)
            if _taken < seen:
                echoes += 1
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def _end_unless_taken(seen: int) -> None:
    if _taken >= seen or not _armed or signal.getsignal(signal.SIGINT) is not _raise:
        return
    report()
    stderr.finish(timeout=0.5, flush=False)  # the main thread may hold stdout's lock: a half-written result is lost anyway
    os._exit(130)
