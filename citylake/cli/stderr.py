"""Native stderr, filtered: Rust panic text never reaches the terminal.

delta-rs (and other Rust libraries) report a panic from their own threads straight to file descriptor 2 — "thread '…'
panicked at …", the message ("Already shut down"), a backtrace, "note: run with `RUST_BACKTRACE=1` …" — past Python, even when
the same failure reaches Python as an exception the CLI turns into one line (a read-only lake, a full disk). ``start``
points fd 2 at a pipe; a small process forked from the CLI reads it, drops panic reports and passes every other line on to
the real stderr. Python's own ``sys.stderr`` is re-opened on the real stderr, so citylake's lines, click and rich write to
the terminal directly and still see a tty.

A process rather than a thread: it outlives a citylake killed mid-write or aborted by a panic, so what was written last still
arrives (or, for a panic, one line saying what failed), and Dask's worker processes, which inherit fd 2, are filtered too.
``finish`` waits until everything written before it has been relayed, then silences the rest: what interpreter shutdown
prints (a panic of a runtime torn down, a warning from a library's destructor) is not the user's business.
``CITYLAKE_DEBUG=1`` turns the filter off.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import signal
import sys
import time

# Markers the CLI writes into the pipe; each is one atomic write (shorter than PIPE_BUF), so never split by other writers.
SYNC = b"\0citylake-stderr:sync\0"  # acknowledge once everything before this has been relayed
QUIET = b"\0citylake-stderr:quiet\0"  # drop everything after this (the command has ended, or was interrupted)
MARKERS = (SYNC, QUIET)
PANIC_HEADER = re.compile(rb"^thread '[^']*'( \(\d+\))? panicked at ")
PANIC_TRAILER = re.compile(rb"^(note: run with `RUST_BACKTRACE|note: Some details are omitted|stack backtrace:|\s+\d+: |\s+at )")
STRAY = re.compile(rb"^(note: run with `RUST_BACKTRACE|note: Some details are omitted|Already shut down\s*$)")  # dropped anywhere
BURST = 0.25  # a panic's message lines follow its header within this many seconds (written by one hook call)
IDLE = 0.1  # a partial line is passed on after this long with nothing more

_state: dict = {}


class PanicFilter:
    """Bytes in, bytes out, with Rust's panic reports taken out: the header, the lines of its message written in the same
    burst, a backtrace, the ``RUST_BACKTRACE`` note and the blank line Rust writes before the header. Other lines pass
    unchanged and in order; ``first_message`` keeps the first dropped panic's message, for a crash line."""

    def __init__(self) -> None:
        self.partial = b""
        self.blank = b""  # a blank line held back: it may open a panic report
        self.in_panic_until = 0.0
        self.first_message: str | None = None
        self.panics = 0

    def feed(self, data: bytes, now: float) -> bytes:
        """The complete lines of ``partial + data`` that pass; an unfinished line waits for the rest (or for ``idle``)."""
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return b"".join(self._line(line + b"\n", now) for line in lines)

    def idle(self, now: float) -> bytes:
        """Nothing more came for a while: pass on a held blank line and an unfinished line (unless inside a panic report)."""
        out, self.blank = self.blank, b""
        if self.partial and not (now < self.in_panic_until or PANIC_HEADER.match(self.partial)):
            out, self.partial = out + self.partial, b""
        return out

    @property
    def holding(self) -> bool:
        return bool(self.partial or self.blank)

    def _line(self, line: bytes, now: float) -> bytes:
        text = line.rstrip(b"\r\n")
        if PANIC_HEADER.match(text):
            self.blank, self.in_panic_until, self.panics = b"", now + BURST, self.panics + 1
            return b""
        if now < self.in_panic_until:
            self.in_panic_until = now + BURST
            if self.first_message is None and text.strip() and not PANIC_TRAILER.match(text):
                self.first_message = text.strip().decode("utf-8", "replace")
            return b""
        if STRAY.match(text):
            return b""
        if not text.strip():
            out, self.blank = self.blank, line
            return out
        out, self.blank = self.blank + line, b""
        return out


def start() -> bool:
    """Filter fd 2 for the rest of this process (the CLI calls it first thing). False, and nothing changed, when the
    platform cannot fork, ``CITYLAKE_DEBUG`` is set, or there is no stderr."""
    if _state or not hasattr(os, "fork") or os.environ.get("CITYLAKE_DEBUG"):
        return False
    try:
        os.fstat(2)
    except OSError:  # started with stderr closed: writes to it go nowhere instead of failing
        _open_devnull_as_stderr()
        return False
    terminal = os.dup(2)
    source, sink = os.pipe()
    acks_in, acks_out = os.pipe()
    pid = os.fork()
    if pid == 0:  # the relay: reads the pipe until every writer has closed it, then ends
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for citylake; the relay lives until the pipe closes
            for fd in {sink, acks_in, 0, 1, 2} - {source, terminal, acks_out}:  # holds no stream a reader waits on but its own
                with contextlib.suppress(OSError):  # (0 or 1 may be closed already, or be one of those three)
                    os.close(fd)
            _relay(source, terminal, acks_out)
        finally:
            os._exit(0)
    os.close(source)
    os.close(acks_out)
    sys.stderr.flush()
    os.dup2(sink, 2)  # fd 2 (inherited by child processes) now feeds the relay
    os.close(sink)
    # buffered to the end of each line: print's text and its newline leave in one write, never split by a relayed line
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(terminal, "w", closefd=False)), encoding=sys.stderr.encoding,
                                  errors=sys.stderr.errors, line_buffering=True)
    _state.update(pid=pid, terminal=terminal, acks=acks_in)
    return True


def quiet() -> None:
    """Drop native stderr from now on (the command was interrupted: what its threads and workers print as they die is noise)."""
    if _state:
        _write_marker(QUIET)


def finish(*, timeout: float = 2.0, flush: bool = True) -> None:
    """The command is done: wait (up to ``timeout``) until everything written to stderr so far has reached the terminal,
    then send what is written from now on, Python's included, to be dropped. ``flush`` flushes Python's streams first."""
    if not _state:
        return
    for stream in (sys.stdout, sys.stderr) if flush else ():
        with contextlib.suppress(Exception):
            stream.flush()
    _write_marker(SYNC + QUIET)
    with contextlib.suppress(OSError):
        if select.select([_state["acks"]], [], [], timeout)[0]:
            os.read(_state["acks"], 1)
        os.dup2(2, _state["terminal"], inheritable=False)  # sys.stderr, and any handler holding it, now write into the pipe too


def _write_marker(marker: bytes) -> None:
    with contextlib.suppress(OSError):
        os.write(2, marker)


def _relay(source: int, terminal: int, acks: int) -> None:
    panics = PanicFilter()
    pending = b""  # text that may end in the first bytes of a marker
    dropping = False
    while True:
        ready = select.select([source], [], [], IDLE if panics.holding else None)[0]
        if not ready:
            _send(terminal, b"" if dropping else panics.idle(time.monotonic()))
            continue
        data = os.read(source, 65536)
        if not data:
            break
        pending += data
        while True:
            found = [(pending.find(m), m) for m in MARKERS if m in pending]
            if not found:
                break
            at, marker = min(found)
            if not dropping:
                now = time.monotonic()
                _send(terminal, panics.feed(pending[:at], now) + (panics.idle(now) if marker == SYNC else b""))
            pending = pending[at + len(marker):]
            if marker == SYNC:
                with contextlib.suppress(OSError):
                    os.write(acks, b"!")
            else:
                dropping = True
        keep = _marker_prefix(pending)
        if not dropping:
            _send(terminal, panics.feed(pending[:len(pending) - keep], time.monotonic()))
        pending = pending[len(pending) - keep:] if keep else b""
    if not dropping:
        _send(terminal, panics.feed(pending, time.monotonic()) + panics.idle(float("inf")))
        if panics.panics:  # citylake ended without finishing (killed, or aborted by the panic): say what failed, in one line
            what = f" ({panics.first_message})" if panics.first_message else ""
            _send(terminal, f"citylake: error: a native library failed{what}; check the lake is writable and its disk has room, "
                            "then run the command again\n".encode())


def _marker_prefix(data: bytes) -> int:
    """How many bytes at the end of ``data`` could be the start of a marker still arriving."""
    for size in range(min(len(data), max(map(len, MARKERS)) - 1), 0, -1):
        if any(m.startswith(data[-size:]) for m in MARKERS):
            return size
    return 0


def _send(terminal: int, data: bytes) -> None:
    """Everything to the real stderr; if it is gone (closed, a broken pipe) keep reading and drop, so writers never block."""
    while data:
        try:
            data = data[os.write(terminal, data):]
        except InterruptedError:
            continue
        except OSError:
            return


def _open_devnull_as_stderr() -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    if null != 2:
        os.dup2(null, 2)
        os.close(null)
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
