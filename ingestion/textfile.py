"""Read delimited text, JSON Lines and Parquet in bounded chunks, keeping each row's position.

CSV is cut into newline-aligned byte blocks here rather than by pyarrow's streaming reader,
because quarantine needs the file line of every bad row (pyarrow's invalid-row hook does not
give it), lines that are not UTF-8 must be set aside before parsing, and one huge line must
not stop the file. Values stay text; ``validate`` turns them into types row by row.

A quoted value may hold line breaks (RFC 4180): such a row is read whole, at the file line it starts on, and a block
never ends inside it. A line with an odd number of quotes opens such a value when it does not read as a row on its own;
the value ends at the next line with an odd number of quotes if the lines from one to the other read as one row of the
header's width, over at most ``MAX_QUOTED_LINES`` lines. Otherwise the quote is unbalanced: that line alone is set
aside, and the lines after it are read as rows again.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from citylake.ingestion.errors import UnreadableInput

DELIMITERS = ",;\t|"
DEFAULT_BATCH_ROWS = 1_000_000  # rows per chunk, and so per commit (setting ingest.batch_rows)
SAMPLE_BYTES = 1 << 16  # enough lines to estimate bytes per row
MAX_BLOCK_BYTES = 256 << 20  # a chunk's text never exceeds this, whatever the estimate says (one huge line skews it)
MAX_HEADER_BYTES = 1 << 20
PARSE_BLOCK_BYTES = 8 << 20  # pyarrow parses blocks of this size on all cores
JSONL_HEADER_RECORDS = 1_000  # a JSON Lines file's columns are the keys of its first objects
COMPILED_SCAN_BYTES = 8 << 20  # blocks from this size are scanned by compiled code (numba loads in about a second)
# A quoted value may hold line breaks (RFC 4180), over at most this many lines: past that its opening quote is taken for
# an unbalanced one. Addresses and notes take a few lines; the bound keeps one stray quote from holding up the file.
MAX_QUOTED_LINES = 100
NEWLINE = ord("\n")


@dataclass
class RawChunk:
    """Rows of one chunk as read, where each came from, and the rows that could not be read."""

    rows: pa.Table
    positions: np.ndarray  # file line (text) or 1-based row (Parquet) of each row
    rejected: list[tuple[int, str, str, str]] = field(default_factory=list)  # (position, raw text, reason, kind)
    bytes_done: int = 0
    delimiter: str | None = ","  # how a rejected line's fields are separated (CSV), so a field can be redacted; None: not CSV

    @property
    def rows_in(self) -> int:
        return self.rows.num_rows + len(self.rejected)


def columns(path: str | Path, *, delimiter: str | None = None, suffix: str | None = None) -> list[str]:
    """The columns a file names, read before any row: a CSV header, a Parquet schema, or the keys of the first
    ``JSONL_HEADER_RECORDS`` objects of JSON Lines (each chunk of which then carries every one of them). ``suffix``: the
    format's extension when the path has none of its own (a copy of an object)."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableInput(str(path), "no such file")
    suffix = (suffix or path.suffix).lower()
    if suffix in (".parquet", ".pq"):
        try:
            return pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as err:
            raise UnreadableInput(str(path), f"not a readable Parquet file ({err})") from None
    if suffix in (".jsonl", ".ndjson", ".json"):
        return jsonl_columns(path)
    return read_header(path, delimiter)[0]


def chunks(path: str | Path, *, batch_rows: int, delimiter: str | None = None, suffix: str | None = None) -> Iterator[RawChunk]:
    """Chunks of about ``batch_rows`` rows from a CSV, JSON Lines or Parquet file (by its extension, or ``suffix``)."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableInput(str(path), "no such file")
    suffix = (suffix or path.suffix).lower()
    if suffix in (".parquet", ".pq"):
        return parquet_chunks(path, batch_rows=batch_rows)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return jsonl_chunks(path, batch_rows=batch_rows)
    return csv_chunks(path, batch_rows=batch_rows, delimiter=delimiter)


# --- CSV -------------------------------------------------------------------------------------


def read_header(path: Path, delimiter: str | None) -> tuple[list[str], str, int]:
    """Column names, the delimiter (sniffed if not given) and the header's length in bytes."""
    with path.open("rb") as f:
        line = f.readline(MAX_HEADER_BYTES)
    if not line:
        raise UnreadableInput(str(path), "the file is empty; nothing to ingest")
    try:
        text = line.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise UnreadableInput(str(path), "the header line is not UTF-8 text; re-save the file as UTF-8") from None
    if not text.strip():
        raise UnreadableInput(str(path), "the first line is blank; it must be the header naming the columns")
    if delimiter is None:
        delimiter = max(DELIMITERS, key=text.count) if any(d in text for d in DELIMITERS) else ","
    columns = [c.strip() for c in next(csv.reader([text], delimiter=delimiter))]
    repeated = [c for c, n in Counter(columns).items() if n > 1]
    if repeated:
        raise UnreadableInput(str(path), f"column {repeated[0]!r} appears twice in the header")
    return columns, delimiter, len(line)


def csv_chunks(path: Path, *, batch_rows: int, delimiter: str | None = None) -> Iterator[RawChunk]:
    columns, delimiter, header_bytes = read_header(path, delimiter)
    block_bytes = _block_bytes(path, header_bytes, batch_rows)
    parser = _BlockParser(columns, delimiter)
    line_no = 2  # the header is line 1
    done = header_bytes
    with path.open("rb") as f:
        f.seek(header_bytes)
        carry = b""
        while True:
            data = f.read(block_bytes)
            at_end = not data
            buf = carry + data
            cut = len(buf) if at_end else buf.rfind(b"\n") + 1
            if cut == 0 and not at_end:  # a line longer than a block: keep reading until it ends
                carry = buf
                continue
            quotes = parser.quoted_rows(buf[:cut], at_end=at_end)
            if quotes.pending is not None:  # a row may go on past the cut: end the block before it
                cut = _line_start(buf, quotes.pending)
                if cut == 0:  # the block is that row so far: read on until it closes (at most MAX_QUOTED_LINES)
                    carry = buf
                    continue
            block, carry = buf[:cut], buf[cut:]
            if block:
                done += len(block)
                lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                chunk = parser.parse(block, line_no, lines, quotes)
                chunk.bytes_done = done
                line_no += lines
                yield chunk
            if at_end:
                return


def _line_start(block: bytes, line: int) -> int:
    """Offset of line ``line`` (0 = the first) in ``block``."""
    if line == 0:
        return 0
    return int(np.flatnonzero(np.frombuffer(block, np.uint8) == NEWLINE)[line - 1]) + 1


def _block_bytes(path: Path, header_bytes: int, batch_rows: int) -> int:
    with path.open("rb") as f:
        f.seek(header_bytes)
        sample = f.read(SAMPLE_BYTES)
    per_row = len(sample) / max(sample.count(b"\n"), 1)
    return min(max(int(per_row * batch_rows), 1 << 12), MAX_BLOCK_BYTES)


@dataclass
class QuotedRows:
    """What the quotes of a block say about its lines (numbered from 0, the block's first)."""

    unbalanced: list[int] = field(default_factory=list)  # lines opening a quoted value that never closes: set aside
    spans: list[tuple[int, int]] = field(default_factory=list)  # rows over several lines (RFC 4180): first and last line
    pending: int | None = None  # first line of a row still open at the block's end, which the next text may close

    @property
    def continuation(self) -> int:
        """How many lines are the second or later line of a row."""
        return sum(last - first for first, last in self.spans)


UNBALANCED = 'has an unbalanced quote (a field opened with " is never closed)'


class _BlockParser:
    def __init__(self, columns: list[str], delimiter: str) -> None:
        self.columns, self.delimiter = columns, delimiter

    def quoted_rows(self, block: bytes, *, at_end: bool) -> QuotedRows:
        """Which lines open a quoted value that goes on to later lines, where each such row ends, and which quotes never
        close. A line with an odd number of quotes either has a literal quote inside an unquoted value (it reads as one
        whole row on its own) or opens a quoted value; that value ends at the next line with an odd number of quotes if
        the lines from the one to the other read as exactly one row of the header's width, at most ``MAX_QUOTED_LINES``
        lines long. Otherwise its quote is unbalanced: the line is set aside, and the lines after it are read as rows
        again, so one stray quote never swallows the rest of the file. Most files quote every field, so this scan runs on
        most blocks: compiled on large blocks, NumPy on small ones (not worth loading the compiler for)."""
        found = QuotedRows()
        if b'"' not in block:
            return found
        text = np.frombuffer(block, np.uint8)
        if len(block) >= COMPILED_SCAN_BYTES:
            from citylake.ingestion.text_kernels import odd_quote_lines

            odd = odd_quote_lines(text).tolist()
        else:
            odd = odd_quote_lines_numpy(text).tolist()
        if not odd:
            return found
        breaks = np.flatnonzero(text == NEWLINE)
        lines = breaks.size + (0 if block.endswith(b"\n") else 1)

        def lines_text(first: int, last: int) -> bytes:
            return block[(breaks[first - 1] + 1 if first else 0):(breaks[last] if last < breaks.size else len(block))]

        i = 0
        while i < len(odd):
            first = odd[i]
            if self._one_row(lines_text(first, first)):  # a literal quote inside a value: the line is a row of its own
                i += 1
                continue
            last = odd[i + 1] if i + 1 < len(odd) else None
            if last is not None and last - first < MAX_QUOTED_LINES and self._one_row(lines_text(first, last)):
                found.spans.append((first, last))
                i += 2
                continue
            if last is None and not at_end and first + MAX_QUOTED_LINES > lines:
                found.pending = first  # the row may close in text not read yet
                return found
            found.unbalanced.append(first)
            i += 1
        return found

    def _one_row(self, text: bytes) -> bool:
        """Whether ``text`` reads (strictly, as RFC 4180 says) as exactly one row of the header's width."""
        try:
            rows = list(csv.reader(io.StringIO(text.decode("utf-8").rstrip("\r"), newline=""), delimiter=self.delimiter, strict=True))
        except (csv.Error, UnicodeDecodeError):
            return False
        return len(rows) == 1 and len(rows[0]) == len(self.columns)

    def parse(self, block: bytes, first_line: int, lines: int, quotes: QuotedRows) -> RawChunk:
        """Rows of a block of ``lines`` whole lines starting at file line ``first_line``; ``quotes`` from ``quoted_rows``."""
        rejected: list[tuple[int, str, str, str]] = []
        invalid: Counter[str] = Counter()
        reasons: dict[str, str] = {}
        spans = list(quotes.spans)

        def on_invalid(row: pcsv.InvalidRow) -> str:
            invalid[row.text] += 1
            reasons[row.text] = f"has {row.actual_columns} fields, expected {row.expected_columns} (truncated line or wrong delimiter?)"
            return "skip"

        block = _set_aside(block, first_line, rejected, quotes.unbalanced, UNBALANCED, "unbalanced quote")
        if not _is_utf8_block(block):  # set such lines aside first: Arrow stops at them, and cannot show one to on_invalid
            block, spans = self._drop_non_utf8_lines(block, first_line, rejected, spans)
        table = self._parse(block, on_invalid, invalid, multiline=bool(spans))
        starts = _row_starts(lines, spans)
        if not invalid and not rejected and table.num_rows == starts.size:  # every row whole: no blank, bad or set-aside lines
            positions = first_line + starts
        else:
            positions = self._positions(block, first_line, spans, invalid, reasons, rejected)
        if positions.size != table.num_rows:
            raise UnreadableInput("csv", f"could not place rows near line {first_line}; check quoting and line endings")
        rejected.sort()
        return RawChunk(table, positions, rejected, delimiter=self.delimiter)

    def _parse(self, block: bytes, on_invalid, invalid: Counter, *, multiline: bool) -> pa.Table:
        try:
            return self._read(block, PARSE_BLOCK_BYTES, on_invalid, multiline)
        except pa.ArrowInvalid as err:  # a line longer than a parse block: parse the chunk as one block
            if "UTF8" in str(err):
                raise
            invalid.clear()
            return self._read(block, len(block) + 1, on_invalid, multiline)

    def _read(self, block: bytes, block_size: int, on_invalid, multiline: bool) -> pa.Table:
        if not block:  # the block was one line, set aside (the last line of a file cut off inside a quoted value): Arrow
            return pa.table({c: pa.array([], pa.string()) for c in self.columns})  # calls nothing at all an empty file
        # values over several lines only where the quote scan found such rows: Arrow splits other blocks faster
        return pcsv.read_csv(
            io.BytesIO(block),
            read_options=pcsv.ReadOptions(column_names=self.columns, block_size=block_size),
            parse_options=pcsv.ParseOptions(delimiter=self.delimiter, invalid_row_handler=on_invalid, newlines_in_values=multiline),
            convert_options=pcsv.ConvertOptions(
                column_types={c: pa.string() for c in self.columns}, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )

    @staticmethod
    def _drop_non_utf8_lines(block: bytes, first_line: int, rejected: list,
                             spans: list[tuple[int, int]]) -> tuple[bytes, list[tuple[int, int]]]:
        """The block with its non-UTF-8 lines set aside (a row over several lines goes whole), and the rows over several
        lines that remain."""
        lines = block.split(b"\n")
        bad = {i for i, line in enumerate(lines) if not _is_utf8(line)}
        broken = [(first, last) for first, last in spans if bad.intersection(range(first, last + 1))]
        for first, last in broken:
            text = b"\n".join(lines[first:last + 1]).rstrip(b"\r").decode("utf-8", "replace")
            rejected.append((first_line + first, text, "is not valid UTF-8 text", "not UTF-8"))
            lines[first:last + 1] = [b""] * (last + 1 - first)
            bad -= set(range(first, last + 1))
        block = _set_aside(b"\n".join(lines), first_line, rejected, sorted(bad), "is not valid UTF-8 text", "not UTF-8")
        return block, [span for span in spans if span not in broken]

    @staticmethod
    def _positions(block: bytes, first_line: int, spans: list[tuple[int, int]], invalid: Counter, reasons: dict,
                   rejected: list) -> np.ndarray:
        """Line numbers of the rows the parser kept (slow path: only blocks with bad or blank lines); a row over several
        lines is at its first."""
        kept = []
        lines = block.split(b"\n")
        last_of = dict(spans)
        i = 0
        while i < len(lines):
            last = last_of.get(i, i)
            row = b"\n".join(lines[i:last + 1]).rstrip(b"\r")
            if row:
                text = row.decode("utf-8")
                if invalid.get(text):
                    invalid[text] -= 1
                    rejected.append((first_line + i, text, reasons[text], "wrong number of fields"))
                else:
                    kept.append(first_line + i)
            i = last + 1
        return np.asarray(kept, dtype=np.int64)


def _row_starts(lines: int, spans: list[tuple[int, int]]) -> np.ndarray:
    """The lines (0 = the block's first) that begin a row: all but the later lines of rows over several lines."""
    later = np.zeros(lines, bool)
    for first, last in spans:
        later[first + 1:last + 1] = True
    return np.flatnonzero(~later)


def odd_quote_lines_numpy(text: np.ndarray) -> np.ndarray:
    """``ingestion.text_kernels.odd_quote_lines`` in NumPy: each quote's line by binary search among the newlines."""
    line_of_quote = np.searchsorted(np.flatnonzero(text == NEWLINE), np.flatnonzero(text == ord('"')))
    return np.flatnonzero(np.bincount(line_of_quote) % 2 == 1)


def _set_aside(block: bytes, first_line: int, rejected: list, found: list[int], reason: str, kind: str) -> bytes:
    """``block`` with the lines numbered ``found`` (0 = its first line) emptied, so the numbering stays and the parser
    skips them, and recorded in ``rejected`` with their line number, text, reason and kind."""
    if not found:
        return block
    lines = block.split(b"\n")
    for i in found:
        rejected.append((first_line + i, lines[i].rstrip(b"\r").decode("utf-8", "replace"), reason, kind))
        lines[i] = b""
    return b"\n".join(lines)


def _is_utf8_block(block: bytes) -> bool:
    """Whether a block is UTF-8, by Arrow's vectorised check (some 15 ms per 100 MB on one core; the block is not copied)."""
    offsets = pa.py_buffer(np.array([0, len(block)], np.int64))
    try:
        pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(block)]).cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- JSON Lines and Parquet -------------------------------------------------------------------


def jsonl_columns(path: Path) -> list[str]:
    """The keys of the first ``JSONL_HEADER_RECORDS`` objects of a JSON Lines file, in the order first seen."""
    keys: dict[str, None] = {}
    objects = lines = 0
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            lines += bool(raw.strip())
            record = _json_record(raw, line_no, [])
            if record is not None:
                keys.update(dict.fromkeys(record))
                objects += 1
                if objects >= JSONL_HEADER_RECORDS:
                    break
    if not lines:
        raise UnreadableInput(str(path), "the file is empty; nothing to ingest")
    return list(keys)


def jsonl_chunks(path: Path, *, batch_rows: int) -> Iterator[RawChunk]:
    """JSON Lines: one object per line; other lines are rejected with the reason. Every chunk has the file's columns
    (``jsonl_columns``), empty where its objects lack them, so a key missing from a whole chunk is a missing value."""
    header = jsonl_columns(path)
    records: list[dict] = []
    positions: list[int] = []
    rejected: list[tuple[int, str, str, str]] = []
    done = 0
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            done += len(raw)
            record = _json_record(raw, line_no, rejected)
            if record is not None:
                records.append(record)
                positions.append(line_no)
            if len(records) + len(rejected) >= batch_rows:
                yield _jsonl_chunk(records, positions, rejected, done, header)
                records, positions, rejected = [], [], []
    if records or rejected:
        yield _jsonl_chunk(records, positions, rejected, done, header)


def _json_record(raw: bytes, line_no: int, rejected: list) -> dict | None:
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return None
    record, why = parse_json(raw)
    fields, why = (None, why) if why else json_fields(record, raw)
    if why:
        rejected.append((line_no, text[:10_000], *why))
    return fields


def parse_json(raw: bytes) -> tuple[object, tuple[str, str] | None]:
    """One JSON text (a JSON Lines line, an MQTT message) as Python, or None and why not as (reason, kind)."""
    try:
        if b"\xed" in raw and not _is_utf8(raw):  # json.loads would read the bytes of a UTF-16 surrogate as one
            raise ValueError("not UTF-8")
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError):
        return None, ("is not valid JSON (or not UTF-8)", "not JSON")
    except RecursionError:  # a message of a thousand nested brackets must not stop the feed that keeps redelivering it
        return None, (TOO_DEEP, "not JSON")


def json_fields(record: object, raw: bytes) -> tuple[dict | None, tuple[str, str] | None]:
    """A parsed JSON object's values as a CSV row reads them (strings as they are, other values as their JSON text), or
    None and why not (reason, kind): not an object, or a string of it is no text (a lone surrogate escape in ``raw``)."""
    if not isinstance(record, dict):
        return None, ("is not a JSON object", "not a JSON object")
    try:
        if b"\\u" in raw and not _is_text(record):  # only an escape can make a string that is no text
            return None, (LONE_SURROGATE, "not UTF-8")
        return {k: None if v is None else v if isinstance(v, str) else json.dumps(v) for k, v in record.items()}, None
    except RecursionError:
        return None, (TOO_DEEP, "not JSON")


TOO_DEEP = "is nested too deeply to read as JSON"
LONE_SURROGATE = "holds a lone surrogate escape (\\uD800-\\uDFFF), which is valid JSON but not text"


def _is_text(record: dict) -> bool:
    """Whether every key and string of a parsed object is text (a lone surrogate, such as "\\ud800", is not)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _jsonl_chunk(records: list[dict], positions: list[int], rejected: list, done: int, header: list[str]) -> RawChunk:
    names = sorted(set(header).union(*records))
    table = pa.table({n: pa.array([r.get(n) for r in records], pa.string()) for n in names})
    return RawChunk(table, np.asarray(positions, dtype=np.int64), rejected, done, delimiter=None)


def parquet_rows(path: str | Path, /) -> int | None:
    """The rows a Parquet file's footer declares; None for any other file, or one whose footer cannot be read (reading
    its chunks then says why)."""
    if Path(path).suffix.lower() not in (".parquet", ".pq"):
        return None
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowInvalid, OSError):
        return None


def parquet_chunks(path: Path, *, batch_rows: int, row_groups: range | None = None,
                   opened: pq.ParquetFile | None = None) -> Iterator[RawChunk]:
    """A Parquet file's chunks; only ``row_groups`` (a run of them: a Dask task's share), their rows numbered as in the
    whole file. ``opened``: the file already open (on object storage)."""
    try:
        source = opened or pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise UnreadableInput(str(path), f"not a readable Parquet file ({err})") from None
    groups = row_groups if row_groups is not None else range(source.metadata.num_row_groups)
    row = 1 + sum(source.metadata.row_group(i).num_rows for i in range(groups.start)) if len(groups) else 1
    done = 0
    size = 0 if opened else path.stat().st_size
    total = max(source.metadata.num_rows, 1)
    for batch in _readable(source.iter_batches(batch_size=batch_rows, row_groups=list(groups)), path):
        positions = np.arange(row, row + batch.num_rows, dtype=np.int64)
        row += batch.num_rows
        done = int(size * (row - 1) / total)
        table, kept, rejected = _checkable(pa.Table.from_batches([batch]), positions)
        yield RawChunk(table, kept, rejected, done, delimiter=None)


def _readable(batches: Iterator[pa.RecordBatch], path: Path) -> Iterator[pa.RecordBatch]:
    """A Parquet file's batches; damage met on the way (a corrupt page) said of the file, in one line."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as err:
            raise UnreadableInput(str(path), f"not a readable Parquet file ({' '.join(str(err).split())[:200]})") from None
        yield batch


# Column types the checks read as they are; Polars casts each of them to text where a check needs it.
CHECKABLE = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
             pa.types.is_decimal, pa.types.is_timestamp, pa.types.is_date, pa.types.is_time, pa.types.is_null)


def _checkable(table: pa.Table, positions: np.ndarray) -> tuple[pa.Table, np.ndarray, list[tuple[int, str, str, str]]]:
    """A Parquet batch whose every column the checks can read, row by row: nested values (lists, structs, maps) become
    their JSON text, as JSON Lines values do; bytes their UTF-8 text; other types (durations, intervals…) their text.
    A row whose bytes are not UTF-8 is set aside, as a CSV line that is not UTF-8 is. Common files pass untouched."""
    unreadable = np.zeros(table.num_rows, bool)
    original = table
    for i, column in enumerate(original.columns):
        kind = column.type
        if pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type):  # Polars reads it as categorical
            continue
        if pa.types.is_dictionary(kind):
            column, kind = column.cast(kind.value_type), kind.value_type
        if any(is_kind(kind) for is_kind in CHECKABLE):
            pass
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
            values = column.to_pylist()
            unreadable |= np.array([v is not None and not _is_utf8(v) for v in values], bool)
            column = pa.array([None if v is None else v.decode("utf-8", "replace") for v in values], pa.string())
        else:
            column = pa.array([None if v is None else json.dumps(v, default=str) for v in column.to_pylist()], pa.string())
        if column.type != original.column(i).type:
            table = table.set_column(i, original.field(i).name, column)
    if not unreadable.any():
        return table, positions, []
    rejected = [(int(positions[r]), ",".join(map(_shown, original.slice(int(r), 1).to_pylist()[0].values())),
                 "is not valid UTF-8 text", "not UTF-8") for r in np.flatnonzero(unreadable)]
    return table.filter(pa.array(~unreadable)), positions[~unreadable], rejected


def _shown(value) -> str:
    """A Parquet value in a set-aside row's text: bytes that are not UTF-8 as escapes."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else "" if value is None else str(value)
