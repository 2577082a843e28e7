"""``citylake shell``: an interactive SQL prompt over one workspace (history, multi-line statements).

Ctrl-C cancels the running statement (``Workspace.interrupt``; it runs on a thread so the prompt can take the key at once)
and returns to the prompt; at the prompt it drops the line being typed; Ctrl-D leaves. The history is saved before each
statement runs, and on leaving.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from citylake.h3_index import CitylakeError

PROMPT, MORE = "citylake> ", "     ...> "
HELP = """Statements end with ; and may span lines. Ctrl-C cancels a running statement. Commands:
  .tables   the tables you can query
  .help     this text
  .quit     leave (or Ctrl-D)"""
MAX_ROWS = 200
CANCELLED = "cancelled"


class _Cancelled(Exception):
    """The statement stopped because the user pressed Ctrl-C."""


class Shell:
    def __init__(self, workspace, tables: list[str], *, emit: Callable[[pa.Table, str], None], history_file: str) -> None:
        self.workspace, self.tables, self.emit = workspace, tables, emit
        self.history = Path(history_file).expanduser()
        self.interactive = sys.stdin.isatty()
        self.keep_history = self.interactive

    def run(self) -> None:
        with _typed_keys_survive_ctrl_c(self.interactive):
            self._run_loop()

    def _run_loop(self) -> None:
        self._load_history()
        print(f"citylake shell ({self.workspace.role} role). End statements with ; — .help for commands.", file=sys.stderr)
        pending: list[str] = []
        while True:
            try:
                line = input(MORE if pending else PROMPT) if self.interactive else self._read_line()
            except EOFError:
                if self.interactive:
                    print(file=sys.stderr)
                break
            except KeyboardInterrupt:  # Ctrl-C drops the statement being typed, not the shell
                pending = []
                print(file=sys.stderr)
                continue
            try:
                if not pending and line.strip().startswith("."):
                    if not self._command(line.strip()):
                        break
                    continue
                pending.append(line)
                text = "\n".join(pending).strip()
                if text.endswith(";"):
                    pending = []
                    self._execute(text)
            except KeyboardInterrupt:  # while a result was being printed
                print(CANCELLED, file=sys.stderr)
        if pending and "\n".join(pending).strip():
            self._execute("\n".join(pending))  # a last statement without ; at end of input
        self._save_history()

    def _read_line(self) -> str:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def _command(self, command: str) -> bool:
        if command in (".quit", ".exit", ".q"):
            return False
        if command == ".tables":
            print("\n".join(self.workspace.tables if self.workspace.role == "analyst" else self.tables))
        elif command == ".help":
            print(HELP)
        else:
            print(f"error: unknown command {command}; try .help", file=sys.stderr)
        return True

    def _execute(self, text: str) -> None:
        self._save_history()  # first: a statement that never returns is still in the history
        try:
            table = self._run(text)
        except _Cancelled:
            print(CANCELLED, file=sys.stderr)
            return
        except (CitylakeError, duckdb.Error) as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return
        if table is None:
            return
        self.emit(table.slice(0, MAX_ROWS), "table")
        more = f", first {MAX_ROWS} shown" if table.num_rows > MAX_ROWS else ""
        print(f"({table.num_rows:,} rows{more})", file=sys.stderr)

    def _run(self, text: str) -> pa.Table | None:
        """The statement on a thread of its own, so that Ctrl-C reaches this one (waiting) and cancels it."""
        outcome: dict = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["table"] = self.workspace.query(text)
            except BaseException as err:  # handed to the waiting thread
                outcome["error"] = err
            finally:
                done.set()

        threading.Thread(target=work, name="citylake-shell-statement", daemon=True).start()
        cancelled = False
        while True:  # an Event, not Thread.join: a KeyboardInterrupt inside join marks a running thread finished (3.11)
            try:
                if done.wait(0.05):
                    break
            except KeyboardInterrupt:
                cancelled = True
                self.workspace.interrupt()
        if "error" in outcome:
            raise (_Cancelled() if cancelled else outcome["error"])
        return outcome.get("table")

    def _load_history(self) -> None:
        if not self.keep_history:
            return
        import readline

        readline.set_history_length(1000)
        if self.history.is_file():
            try:
                readline.read_history_file(self.history)
            except OSError as err:
                print(f"note: the history in {self.history} could not be read ({err.strerror}); starting without it", file=sys.stderr)

    def _save_history(self) -> None:
        if not self.keep_history:
            return
        import readline

        try:
            self.history.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(self.history)
        except OSError as err:
            self.keep_history = False  # said once
            print(f"note: the history cannot be saved to {self.history} ({err.strerror}); pass --history FILE", file=sys.stderr)


@contextlib.contextmanager
def _typed_keys_survive_ctrl_c(interactive: bool) -> Iterator[None]:
    """The terminal keeps what was typed when Ctrl-C is pressed (NOFLSH), for as long as the shell runs. Otherwise a key
    typed just before Ctrl-C can be thrown away after readline saw it waiting and before it read it, and readline then
    waits for a key that never comes, retrying through every signal, so Ctrl-C at the prompt did nothing."""
    try:
        import termios

        saved = termios.tcgetattr(sys.stdin.fileno()) if interactive else None
    except (ImportError, OSError):
        saved = None
    if saved is None:
        yield
        return
    keeping = list(saved)
    keeping[3] |= termios.NOFLSH
    termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, keeping)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, saved)
