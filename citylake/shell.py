"""``citylake shell``: an interactive SQL prompt over one workspace (history, multi-line statements)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

from citylake.h3_index import CitylakeError

PROMPT, MORE = "citylake> ", "     ...> "
HELP = """Statements end with ; and may span lines. Commands:
  .tables   the tables you can query
  .help     this text
  .quit     leave (or Ctrl-D)"""
MAX_ROWS = 200


class Shell:
    def __init__(self, workspace, tables: list[str], *, emit: Callable[[pa.Table, str], None], history_file: str) -> None:
        self.workspace, self.tables, self.emit = workspace, tables, emit
        self.history = Path(history_file).expanduser()
        self.interactive = sys.stdin.isatty()

    def run(self) -> None:
        self._load_history()
        print(f"citylake shell ({self.workspace.role} role). End statements with ; — .help for commands.", file=sys.stderr)
        pending: list[str] = []
        while True:
            try:
                line = input(MORE if pending else PROMPT) if self.interactive else self._read_line()
            except EOFError:
                break
            except KeyboardInterrupt:  # Ctrl-C drops the statement being typed, not the shell
                pending = []
                print(file=sys.stderr)
                continue
            if not pending and line.strip().startswith("."):
                if not self._command(line.strip()):
                    break
                continue
            pending.append(line)
            text = "\n".join(pending).strip()
            if text.endswith(";"):
                pending = []
                self._execute(text)
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
        try:
            result = self.workspace.sql(text)
            if result is None:
                return
            table = result.to_arrow_table()
        except (CitylakeError, duckdb.Error) as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return
        self.emit(table.slice(0, MAX_ROWS), "table")
        more = f", first {MAX_ROWS} shown" if table.num_rows > MAX_ROWS else ""
        print(f"({table.num_rows:,} rows{more})", file=sys.stderr)

    def _load_history(self) -> None:
        if not self.interactive:
            return
        import readline

        readline.set_history_length(1000)
        if self.history.is_file():
            readline.read_history_file(self.history)

    def _save_history(self) -> None:
        if not self.interactive:
            return
        import readline

        self.history.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(self.history)
