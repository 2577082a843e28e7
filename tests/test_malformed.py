"""A corpus of malformed inputs, run through the CLI as a user would: every case ends with a
clear one-line message or quarantined rows, never a traceback, and every valid row lands."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import random
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
import shapely.geometry
from conftest import TEST_KEY, with_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citylake.ingestion.iot import ingest_readings, ingest_sensors
from citylake.ingestion.location import ingest_pings
from citylake.ingestion.map import ingest_places
from citylake.lake import Lake, duckdb_for
from citylake.privacy.pseudonyms import pseudonym

pytestmark = pytest.mark.integration
GOOD = "good-{i},2026-11-01T00:{i:02d}:00Z,31.2{i},121.4{i},5"
HEADER = b"device_id,ts,lat,lon,accuracy_m\n"


def good_rows(n: int, start: int = 0) -> bytes:
    return "".join(GOOD.format(i=i) + "\n" for i in range(start, start + n)).encode()


def many_good_rows(n: int) -> bytes:
    return "".join(f"many-{i},2026-11-01T00:00:{i % 60:02d}Z,31.{i:04d},121.4,5\n" for i in range(n)).encode()


# name -> (file bytes, valid rows that must land, error fragment if the whole file is refused)
CORPUS = {
    "truncated last line": (HEADER + good_rows(3) + b"cut-off,2026-11-01T00:0", 3, None),
    "wrong delimiter": (HEADER.replace(b",", b";") + good_rows(2).replace(b",", b";"), 2, None),  # sniffed
    "missing columns": (b"device_id,ts,lat\nd,2026-11-01T00:00:00Z,31.2\n", 0, "missing column(s) lon"),
    "text in numeric column": (HEADER + good_rows(2) + b"d,2026-11-01T00:00:00Z,north,east,5\n", 2, None),
    "NaN and inf": (HEADER + good_rows(2) + b"d,2026-11-01T00:00:00Z,NaN,121.4,5\nd,2026-11-01T00:00:00Z,31.2,inf,5\n", 2, None),
    "lat/lon swapped": (HEADER + good_rows(2) + b"d,2026-11-01T00:00:00Z,121.4,31.2,5\n", 2, None),
    "out of range": (HEADER + good_rows(1) + b"d,2026-11-01T00:00:00Z,-91,200,5\n", 1, None),
    "empty file": (b"", 0, "empty"),
    "header only": (HEADER, 0, None),
    "duplicated header": (HEADER + good_rows(2) + HEADER + good_rows(2, start=2), 4, None),
    "non-UTF-8 bytes": (HEADER + good_rows(2) + b"d\xff\xfe,2026-11-01T00:00:00Z,31.2,121.4,5\n" + good_rows(1, start=5), 3, None),
    "a huge line": (HEADER + good_rows(2) + b"d," + b"9" * 5_000_000 + b",31.2,121.4,5\n" + good_rows(1, start=7), 3, None),
    "blank lines and CRLF": (HEADER + b"\r\n" + good_rows(2).replace(b"\n", b"\r\n") + b"\n\n", 2, None),
    "quoted commas": (HEADER + b'"dev, with comma",2026-11-01T00:00:00Z,31.2,121.4,5\n', 1, None),
    "a lone quote": (HEADER + good_rows(1) + b'"\n' + good_rows(1, start=3)
                     + b'd,"2026-11-01T00:00:00Z,31.2,121.4,5\n' + good_rows(1, start=4),
                     3, None),  # the quote must not swallow the good line after it
    "a quoted newline (RFC 4180)": (HEADER + good_rows(1) + b'"dev\nover two lines",2026-11-01T00:00:00Z,31.2,121.4,5\n'
                                    + b'"d2, a note\r\non two lines",2026-11-01T00:00:00Z,"31.2","121.4","5"\n' + good_rows(1, start=3),
                                    4, None),
    "an unbalanced quote, then many lines": (HEADER + good_rows(1) + b'd,"2026-11-01T00:00:00Z,31.2,121.4,5\n'
                                             + many_good_rows(150) + b'x,"y\n', 151, None),
    "a literal quote inside a value": (HEADER + b'dev 5\'10",2026-11-01T00:00:00Z,31.2,121.4,5\n' + good_rows(1), 2, None),
    "duplicate delivery": (HEADER + good_rows(2) + good_rows(2), 2, None),
    "not a CSV at all": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, 0, "header line is not UTF-8"),
    "cut off inside a quoted value": (HEADER + good_rows(2) + b'cut,"2026-11-01T00:00:00Z,31.2', 2, None),
    "a wrong-width line that is not UTF-8": (HEADER + good_rows(1) + b"d\xff,x,2026-11-01T00:00:00Z,31.2,121.4,5\n" + good_rows(1, start=2),
                                             2, None),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_malformed_pings_file(tmp_path, name):
    content, valid, error = CORPUS[name]
    path = tmp_path / "pings.csv"
    path.write_bytes(content)
    lake = with_key(Lake.init(tmp_path / "lake"))
    result = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "ingest", "pings", str(path)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY})
    assert "Traceback" not in result.stderr + result.stdout
    if error:
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and error in lines[0], result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert f" {valid:,} accepted" in result.stdout, result.stdout
    assert lake.rows("pings") == valid


def test_quarantine_keeps_the_raw_text_and_line(tmp_path):
    content, _, _ = CORPUS["non-UTF-8 bytes"]
    (tmp_path / "p.csv").write_bytes(content + b"d,2026-11-01T00:00:00Z,121.4,31.2,5\n")
    lake = Lake.init(tmp_path / "lake")
    ingest_pings(lake, tmp_path / "p.csv", key=b"k")
    rows = duckdb_for(lake).execute("SELECT row_number, reason, raw FROM quarantine ORDER BY row_number").fetchall()
    assert rows[0][:2] == (4, "is not valid UTF-8 text") and rows[0][2].startswith("pseudonym:")  # the id field, pseudonymised
    assert rows[1][0] == 6 and "swapped" in rows[1][1] and rows[1][2].endswith(",2026-11-01T00:00:00Z,121.4,31.2,5")


# --- generated: rows that are valid by construction, mixed with rows broken in random ways ---------

valid_row = st.builds(
    lambda d, m, lat, lon: f"{d},2026-11-0{1 + m % 9}T{m % 24:02d}:{m % 60:02d}:00Z,{lat:.6f},{lon:.6f},5",
    st.text("abcdefghij0123456789-", min_size=1, max_size=12), st.integers(0, 10_000),
    st.floats(-89, 89).filter(lambda v: abs(v) > 1e-3), st.floats(-179, 179).filter(lambda v: abs(v) > 1e-3),
)
broken_row = st.one_of(
    st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t),
    st.builds(lambda v: f"d,2026-11-01T00:00:00Z,{v},121.4,5", st.sampled_from(["", "x", "NaN", "inf", "-inf", "1e999", "95", "0x10"])),
    st.builds(lambda v: f"d,{v},31.2,121.4,5", st.text(max_size=20).filter(lambda t: "," not in t and "\n" not in t and "\r" not in t)),
    st.just("d,2026-11-01T00:00:00Z,0,0,5"),
    st.just(",,,,"),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), valid_row, broken_row), min_size=1, max_size=40))
def test_generated_files_land_every_valid_row(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("gen")
    lake = Lake.init(tmp / "lake")
    lines = [v if ok else b for ok, v, b in rows]
    (tmp / "p.csv").write_text(HEADER.decode() + "\n".join(lines) + "\n")
    report = ingest_pings(lake, tmp / "p.csv", key=b"k")
    distinct_valid = len({v for ok, v, _ in rows if ok})
    assert report.accepted >= distinct_valid  # a broken row can be valid by accident; a valid row never fails
    assert report.rows_in == report.accepted + report.rejected + report.duplicates
    assert lake.rows("quarantine") == report.rejected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b'"', b"\n", b"a", b",", b"\r"]), max_size=300))
def test_odd_quote_lines_compiled_scan_agrees_with_numpy(parts):
    import numpy as np

    from citylake.ingestion.text_kernels import odd_quote_lines
    from citylake.ingestion.textfile import odd_quote_lines_numpy

    text = np.frombuffer(b"".join(parts), np.uint8)
    assert odd_quote_lines(text).tolist() == odd_quote_lines_numpy(text).tolist()


# --- RFC 4180: quoted values over several lines, against Python's csv module as the oracle --------------------

def value(longest: int):
    return st.lists(st.sampled_from(list('ab,"\n é') + ["\r\n"]), max_size=longest).map("".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(value(30), value(12)), min_size=1, max_size=400), st.integers(0, 400), st.sampled_from([1, 7, 50]))
def test_quoted_newlines_read_as_pythons_csv_reads_them(tmp_path_factory, rows, stray_at, batch_rows):
    """Rows written by csv.writer (values with quotes, commas and line breaks) read back the same, each at the line it
    starts on, however the blocks fall (a block is at least 4 KiB: long files are cut inside rows); one stray unbalanced
    quote is set aside at its line and takes no other row. (A stray quote that could start a row of the header's width
    with the lines after it is read as RFC 4180 reads it: the csv module makes the same row.)"""
    import csv
    import io

    from citylake.ingestion.textfile import chunks

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    lines, line = [], 2
    for i, (a, b) in enumerate(rows):
        if i == stray_at:
            out.write('s,t,u,"quote\n')  # opens a value no later line can close as a row of 3: it has 4 fields already
            stray_line, line = line, line + 1
        writer.writerow([f"r{i}", a, b])
        lines.append(line)
        line += f"{a}{b}".count("\n") + 1
    path = tmp_path_factory.mktemp("rfc") / "rows.csv"
    path.write_bytes(("id,a,b\n" + out.getvalue()).encode())
    got, positions, rejected = [], [], []
    for chunk in chunks(path, batch_rows=batch_rows):
        got += [tuple(r.values()) for r in chunk.rows.to_pylist()]
        positions += chunk.positions.tolist()
        rejected += chunk.rejected
    assert got == [(f"r{i}", a, b) for i, (a, b) in enumerate(rows)]
    assert positions == lines
    assert [(r[0], r[3]) for r in rejected] == ([(stray_line, "unbalanced quote")] if stray_at < len(rows) else [])


def test_a_quoted_value_may_span_at_most_max_quoted_lines(tmp_path):
    from citylake.ingestion.textfile import MAX_QUOTED_LINES, chunks

    body = "\n".join(f"line {i}" for i in range(MAX_QUOTED_LINES))  # a row of MAX_QUOTED_LINES lines
    (tmp_path / "t.csv").write_text("id,a,b\n" f'1,"{body}",x\n2,b,c\n' f'3,"{body}\none more",x\n4,b,c\n')
    parts = list(chunks(tmp_path / "t.csv", batch_rows=10))
    got = {row["id"]: (row["a"], int(line)) for part in parts for row, line in zip(part.rows.to_pylist(), part.positions)}
    rejected = [(line, kind) for part in parts for line, _, _, kind in part.rejected]
    assert got["1"] == (body, 2) and got["2"] == ("b", 2 + MAX_QUOTED_LINES)
    too_long = 3 + MAX_QUOTED_LINES  # one line more: its opening quote is taken for unbalanced, and the lines after it read
    assert rejected[0] == (too_long, "unbalanced quote") and "3" not in got
    assert got["4"] == ("b", too_long + MAX_QUOTED_LINES + 1)


def test_a_bad_row_over_several_lines_is_quarantined_at_its_first_line(tmp_path):
    (tmp_path / "p.csv").write_bytes(HEADER + good_rows(1) + b'"dev\nsplit",2026-11-01T00:00:00Z,north,121.4,5\n' + good_rows(1, start=3))
    lake = Lake.init(tmp_path / "lake")
    report = ingest_pings(lake, tmp_path / "p.csv", key=b"k")
    assert (report.accepted, report.rejected) == (2, 1)
    ((line, reason, raw),) = duckdb_for(lake).execute("SELECT row_number, reason, raw FROM quarantine").fetchall()
    assert line == 3 and reason.startswith("lat ") and raw.startswith("pseudonym:") and "split" not in raw


# --- a header without the required columns: one line, exit 1, nothing written ------------------------------------

WRONG_HEADERS = {  # feed -> (columns the file has, the required ones it lacks)
    "pings": (["uid", "ts", "lat", "lon"], ["device_id"]),
    "readings": (["sensor_id", "time", "metric", "val"], ["ts", "value"]),
    "sensors": (["id", "kind", "lat", "lon"], ["sensor_id"]),
}


def wrong_header_file(tmp_path, feed: str, fmt: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names, _ = WRONG_HEADERS[feed]
    rows = [] if fmt.endswith("empty") else [["x", "2026-11-01T00:00:00Z", "31.2", "121.4"]]
    path = tmp_path / f"{feed}.{fmt.split('-')[0]}"
    if fmt.startswith("csv"):
        path.write_text(",".join(names) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(dict(zip(names, r))) + "\n" for r in rows))
    else:
        pq.write_table(pa.table({n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)}), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "csv-empty", "jsonl", "parquet", "parquet-empty"])
@pytest.mark.parametrize("feed", list(WRONG_HEADERS))
def test_a_header_without_required_columns_is_one_line_and_writes_nothing(tmp_path, feed, fmt):
    path = wrong_header_file(tmp_path, feed, fmt)
    lake = with_key(Lake.init(tmp_path / "lake"))
    result = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "ingest", feed, str(path)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY})
    found, missing = WRONG_HEADERS[feed]
    assert result.returncode == 1 and result.stdout == "", result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert f"missing column(s) {', '.join(missing)}; found {', '.join(found)}" in line
    assert lake.rows(feed) == lake.rows("batches") == lake.rows("quarantine") == 0


# --- a generated corpus: every feed in every format, valid rows mixed with malformed ones, checked by an oracle --------
#
# A file's plan is a list of (kind, seed): a valid row (plainly or oddly spelt), a copy of an earlier valid row, a blank
# line, or one malformation. The generator builds each row from its kind and seed alone and keeps what it built: for a
# valid row the values the lake must hold, for a malformed one what its quarantine reason must say. That knowledge is the
# oracle: citylake's own checks are never asked. A malformed row breaks one thing only, so its reason is known.

UTC = dt.timezone.utc
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=UTC)
MISSING = type("Missing", (), {"__repr__": lambda self: "MISSING"})()  # a JSON key left out; an empty CSV field
MALFORMED_PER_FILE = 130  # malformed rows in every generated file at least (blank lines and duplicates not counted)
CORPUS_EXAMPLES = max(7, settings.default.max_examples // 20)  # files per feed and format: 7 by default, 15 in CI
MALFORMED_RECORDS: Counter[str] = Counter()  # per feed/format: rows this session generated that must be quarantined
ID_STEMS = ("dev-", "Dév ", "设备-", "a,b;c|d\t", 'q"uote ', "x")  # delimiters and quotes: a CSV writer must quote them


@dataclass(eq=False)
class Row:
    """One generated row and what the generator knows about it."""

    kind: str
    fields: dict = field(default_factory=dict)  # column -> value as written: str, int, float, datetime, nested, None, MISSING
    stored: dict | None = None  # a valid row: what the lake holds for it
    reason: str = ""  # a malformed row: a pattern its quarantine reason matches
    feature: object = MISSING  # a GeoJSON feature written as it is
    copy_of: Row | None = None  # a duplicate: skipped, neither landed again nor quarantined
    record: bool = True  # a blank line is no record at all
    salt: int = 0  # a seed for how a writer breaks the row's line

    @property
    def valid(self) -> bool:
        return self.stored is not None and self.copy_of is None


@dataclass
class FileStyle:
    """A file's own choices, drawn from its seed: how its values are spelt and how it is read."""

    fmt: str
    delimiter: str = ","
    pass_delimiter: bool = False
    bom: bool = False
    final_newline: bool = True
    batch_rows: int = 1_000_000
    numbers: str = "text"  # Parquet: float64 | float32 | text
    times: str = "text"  # Parquet: timestamp | naive-ms | epoch | text
    int_ids: bool = False  # Parquet pings: device ids as int64

    @classmethod
    def draw(cls, fmt: str, rng: random.Random) -> FileStyle:
        style = cls(fmt, bom=rng.random() < 0.2, final_newline=rng.random() < 0.8, batch_rows=rng.choice([7, 50, 1_000_000]))
        if fmt == "csv":
            style.delimiter, style.pass_delimiter = rng.choice(",;\t|"), rng.random() < 0.3
        if fmt == "parquet":
            style.numbers, style.times = rng.choice(["float64", "float32", "text"]), rng.choice(["timestamp", "naive-ms", "epoch", "text"])
            style.int_ids = rng.random() < 0.3
        return style

    @property
    def typed(self) -> bool:  # numbers in a typed Parquet column: no text can be written there
        return self.numbers != "text"


# --- values, and ways to spell them -----------------------------------------------------------------------------------


def decimal_number(rng: random.Random, low: float, high: float) -> float:
    return round(rng.uniform(low, high), rng.choice([0, 1, 2, 4, 5, 5, 6, 8]))


def position(rng: random.Random) -> tuple[float, float]:
    """(lat, lon): mostly in one city, some anywhere, a few on the edges of the range; never (0, 0)."""
    r = rng.random()
    if r < 0.75:
        return decimal_number(rng, 31.0, 31.5), decimal_number(rng, 121.2, 121.8)
    if r < 0.93:
        lat, lon = decimal_number(rng, -90, 90), decimal_number(rng, -180, 180)
        return (lat, lon) if (lat, lon) != (0, 0) else (1.0, lon)
    return rng.choice([(90.0, 180.0), (-90.0, -180.0), (0.0, 121.4), (31.2, 0.0), (-89.99999, 179.99999)])


def moment(rng: random.Random, unit: str | None = None) -> dt.datetime:
    """A valid time: mostly three days of November 2026, some anywhere from 2000-01-01 to now, a few on the edges."""
    now = dt.datetime.now(UTC)
    r = rng.random()
    if r < 0.7:
        t = dt.datetime(2026, 11, 1, tzinfo=UTC) + dt.timedelta(seconds=rng.uniform(0, 3 * 86400))
    elif r < 0.93:
        t = EARLIEST + (now - dt.timedelta(hours=1) - EARLIEST) * rng.random()
    else:
        t = rng.choice([EARLIEST, now - dt.timedelta(minutes=1), dt.datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)])
    unit = unit or rng.choice(["s", "ms", "us"])
    return t.replace(microsecond={"s": 0, "ms": t.microsecond // 1000 * 1000, "us": t.microsecond}[unit])


def epoch_ms(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(milliseconds=1)


def spell_time(rng: random.Random, t: dt.datetime, style: FileStyle):
    """``t`` as one of the spellings the README promises: ISO with Z or an offset, naive (read as UTC), epoch s/ms."""
    if style.fmt == "parquet" and style.times != "text":
        return t
    frac = f".{t.microsecond:06d}" if t.microsecond else ""
    offset = dt.timezone(dt.timedelta(minutes=rng.choice([330, -480, 0, 345, -210, 840])))
    forms = [t.strftime("%Y-%m-%dT%H:%M:%S") + frac + rng.choice("Zz"), t.astimezone(offset).isoformat(),
             t.strftime("%Y-%m-%d %H:%M:%S") + frac]
    if not t.microsecond:
        forms += [t.strftime("%Y/%m/%d %H:%M:%S"), epoch_ms(t) // 1000]
    if not t.microsecond % 1000:
        forms += [epoch_ms(t), f"{epoch_ms(t) / 1000:.3f}"]
    if not t.second and not t.microsecond:
        forms.append(t.strftime("%Y-%m-%dT%H:%M"))
    spelt = rng.choice(forms)
    return spelt if style.fmt == "jsonl" or isinstance(spelt, str) else str(spelt)


def spell_number(rng: random.Random, value: float, style: FileStyle):
    """``value`` spelt so that it reads back as exactly ``value``: shortest, signed, scientific or padded text (in JSON
    also a JSON number; in a typed Parquet column the float itself)."""
    if style.fmt == "parquet" and style.typed:
        return value
    text = repr(value)
    text = rng.choice([text, text if text.startswith("-") else f"+{text}", f"{Decimal(text):E}", f" {text} "])
    return rng.choice([value, text]) if style.fmt in ("jsonl", "geojson") else text


def stored_float(value: float, style: FileStyle, *, decimals: int | None = None) -> float:
    """What the lake holds for ``value``: rounded where the table rounds, and from a float32 column the float32's
    shortest decimal (31.2, not 31.200000762939453: values are read as text)."""
    if style.fmt == "parquet" and style.numbers == "float32":
        value = float(str(np.float32(value)))
    return round(value, decimals) if decimals is not None else value


def near(stored: float, expected: float, style: FileStyle) -> bool:
    """Rounding to 5 decimals may fall either side of a tie (Polars and Python round ties differently), the more so
    from a float32's 7 digits."""
    tolerance = 2e-5 if style.numbers == "float32" and style.fmt == "parquet" else 1.0001e-5
    return abs(stored - expected) <= tolerance


# --- malformed values: (value, reason pattern), each breaking one field -----------------------------------------------

NOT_NUMBERS = ["north", "0x1F", "1.2.3", "31.2N", "--5", "½", "1_000", "—"]
NOT_FINITE = ["NaN", "nan", "inf", "-inf", "Infinity", "1e999", "+inf"]
NOT_TIMES = ["yesterday", "2026-13-01T00:00:00Z", "2026-02-30T10:00:00Z", "2026-11-01T24:30:00Z", "11/01/2026 10:00",
             "2026-11-01T10:00:00 UTC", "NaN", "1e20", "T", "2026-11-01Tnoon"]
BEFORE_2000 = ["0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z",
               "1999-12-31T23:59:59.999999Z", "2000-01-01T05:00:00+06:00", "0", "-1", "946684799", "1999-12-31 23:59:59",
               "-62135596800"]
BEFORE_2000_TYPED = [dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(1900, 1, 1, tzinfo=UTC), dt.datetime(1970, 1, 1, tzinfo=UTC),
                     dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)]
FUTURE_TYPED = [dt.datetime(2099, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)]


def bad_time(rng: random.Random, how: str, style: FileStyle, column: str = "ts") -> tuple[object, str]:
    """A timestamp that is missing, no timestamp, before 2000 or in the future, as this file can hold one."""
    now = dt.datetime.now(UTC)
    typed = style.fmt == "parquet" and style.times != "text"
    if how == "missing" or (typed and how == "garbage"):
        return (None if typed else rng.choice([None, "", MISSING])), rf"^{column} is missing$"
    if how == "garbage":
        value = rng.choice(NOT_TIMES + ([{"at": "2026-11-01"}, [2026, 11, 1], True] if style.fmt == "jsonl" else []))
        return value, rf"^{column} .* is not a timestamp"
    if how == "past":
        if style.times == "epoch" and typed:
            value = rng.choice([-1, 0, 946_684_799])
        else:
            value = rng.choice(BEFORE_2000_TYPED) if typed else rng.choice(BEFORE_2000 + ([0, -1] if style.fmt == "jsonl" else []))
        if style.times == "naive-ms" and typed:
            value = value.replace(tzinfo=None)
        return value, rf"^{column} .* is before the lake's earliest date 2000-01-01"
    later = [now + dt.timedelta(hours=2), *FUTURE_TYPED]
    if style.times == "epoch" and typed:
        value = rng.choice([4_102_444_800, 99_999_999_999, int((now + dt.timedelta(days=1)).timestamp())])
    elif typed:
        value = rng.choice(later)
        value = value.replace(tzinfo=None) if style.times == "naive-ms" else value
    else:
        value = rng.choice([(now + dt.timedelta(hours=2)).isoformat(), "2099-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                            "4102444800", "32503680000000"])
    return value, rf"^{column} .* is in the future"


def bad_number(rng: random.Random, how: str, column: str, style: FileStyle) -> tuple[object, str]:
    """A number that is missing, no number or not finite, as this file can hold one (a typed column holds no text)."""
    typed = style.fmt == "parquet" and style.typed
    if how == "missing":
        return (None if typed else rng.choice([None, "", MISSING])), rf"^{column} is missing$"
    if how == "text" and not typed:
        nested = [{"deg": 31}, [31.2], True, "31.2.1"] if style.fmt in ("jsonl", "geojson") else []
        value = rng.choice(NOT_NUMBERS + nested)
        return value, rf"^{column} .* is not a number$"
    value = rng.choice([math.nan, math.inf, -math.inf]) if typed else rng.choice(NOT_FINITE)
    return value, rf"^{column} .* is not (finite|a number)$"


def bad_text(rng: random.Random, how: str, column: str, style: FileStyle) -> tuple[object, str]:
    """A required text value that is missing or blank."""
    if how == "blank":
        return rng.choice(["   ", "\t", " \u3000 "]), rf"^{column} is missing$"
    return (None if style.fmt == "parquet" else rng.choice([None, "", MISSING])), rf"^{column} is missing$"


def break_position(rng: random.Random, how: str, fields: dict, style: FileStyle) -> str:
    """Make (lat, lon) wrong in one way; the reason pattern it must be quarantined with."""
    if how in ("lat", "lon"):
        value, reason = bad_number(rng, rng.choice(["missing", "text", "not finite"]), how, style)
        fields[how] = value
        return reason
    if how == "lat range":
        fields["lat"] = spell_number(rng, rng.choice([90.0001, -91.0, 1e6, 123.4]), style)
        return r"^lat .* is out of range ±90"
    if how == "lon range":
        fields["lon"] = spell_number(rng, rng.choice([180.00001, -181.0, 360.0, 1e9]), style)
        return r"^lon .* is out of range ±180"
    if how == "swapped":
        lat, lon = decimal_number(rng, -60, 60), rng.choice([1, -1]) * decimal_number(rng, 91, 180)
        fields["lat"], fields["lon"] = spell_number(rng, lon, style), spell_number(rng, lat, style)
        return r"^lat .* is out of range ±90 \(lat/lon swapped\?\)"
    zero = [0.0, -0.0] if style.fmt == "parquet" and style.typed else ["0", "0.0", "-0", "0e0", " 0 "]
    fields["lat"], fields["lon"] = rng.choice(zero), rng.choice(zero)
    return r"^position \(0, 0\) is a null-island placeholder"


POSITION_BREAKS = ["lat", "lon", "lat range", "lon range", "swapped", "null island"]
TIME_BREAKS = ["missing", "garbage", "past", "future"]


# --- the feeds: a valid row, and each malformation of one ------------------------------------------------------------

KEY = TEST_KEY.encode()
TEXT_LINE_BREAKS = ["too few fields", "too many fields", "unbalanced quote", "not UTF-8", "header again", "spaces only"]
JSON_LINE_BREAKS = ["truncated JSON", "not an object", "not UTF-8", "lone surrogate", "two objects", "trailing garbage",
                    "single quotes"]
LINE_REASONS = {
    "too few fields": r"^has \d+ fields, expected \d+", "too many fields": r"^has \d+ fields, expected \d+",
    "spaces only": r"^has 1 fields, expected \d+", "unbalanced quote": r"unbalanced quote", "not UTF-8": r"^is not valid UTF-8 text$",
    "truncated JSON": r"^is not valid JSON", "two objects": r"^is not valid JSON", "trailing garbage": r"^is not valid JSON",
    "single quotes": r"^is not valid JSON", "not an object": r"^is not a JSON object$", "lone surrogate": r"lone surrogate",
}
JSON_NOT_UTF8 = r"^is not valid JSON \(or not UTF-8\)$"
ODD_VALID = {"csv": ["quoted newline", "quote all", "literal quote", "crlf", "huge id"], "jsonl": ["ascii escapes", "huge id"],
             "parquet": [], "geojson": ["3d"], "csv-wkt": ["3d", "quote all"], "csv-latlon": ["quote all"]}
METRICS = ("pm2.5 µg/m³", "noise_db", "temp,°C", "flow")
REGISTRY = [f"{stem}{i}" for i, stem in enumerate(["s-", "S 中 ", "sensor,", 'q"s', "s|"] * 3)]  # readings' sensors


def line_breaks(fmt: str) -> list[str]:
    return TEXT_LINE_BREAKS if fmt.startswith("csv") else JSON_LINE_BREAKS if fmt == "jsonl" else []


def time_unit(style: FileStyle) -> str | None:
    return {"naive-ms": "ms", "epoch": "s"}.get(style.times) if style.fmt == "parquet" else None


def ping(rng: random.Random, n: int, style: FileStyle, kind: str) -> Row:
    raw_id = n * 10**12 + rng.randrange(10**12) if style.int_ids else f"{rng.choice(ID_STEMS)}{n}"  # long: no chance substring
    if kind == "literal quote":
        raw_id = f"dev 5'10\" {n}"
    elif kind == "quoted newline":
        raw_id = f"line\nbreak {n}"
    elif kind == "huge id":
        raw_id = f"{n}-" + "x" * rng.randrange(50_000, 300_000)
    t, (lat, lon) = moment(rng, time_unit(style)), position(rng)
    accuracy = rng.choice([None, decimal_number(rng, 0, 200)])
    fields = {"device_id": raw_id, "ts": spell_time(rng, t, style), "lat": spell_number(rng, lat, style),
              "lon": spell_number(rng, lon, style),
              "accuracy_m": rng.choice([None, "", MISSING]) if accuracy is None else spell_number(rng, accuracy, style)}
    if style.fmt == "parquet":
        fields["accuracy_m"] = None if accuracy is None else fields["accuracy_m"]
    row = Row(kind, fields, {"device_id": pseudonym(str(raw_id), KEY), "ts": t.replace(microsecond=0),
                             "lat": stored_float(lat, style, decimals=5), "lon": stored_float(lon, style, decimals=5),
                             "accuracy_m": None if accuracy is None else float(np.float32(accuracy))})
    if kind in ODD_VALID[style.fmt] or kind in ("valid", "duplicate", "blank") or kind in line_breaks(style.fmt):
        return row
    row.stored = None
    what, _, how = kind.partition(":")
    if what == "device_id":
        row.fields["device_id"], row.reason = bad_text(rng, how, "device_id", style)
        if style.int_ids:
            row.fields["device_id"] = None
    elif what == "ts":
        row.fields["ts"], row.reason = bad_time(rng, how, style)
    elif what == "position":
        row.reason = break_position(rng, how, row.fields, style)
    elif kind == "accuracy:negative":
        row.fields["accuracy_m"], row.reason = spell_number(rng, -decimal_number(rng, 1, 50), style), r"^accuracy_m .* is negative$"
    elif kind == "accuracy:not a number":
        row.fields["accuracy_m"], row.reason = bad_number(rng, rng.choice(["text", "not finite"]), "accuracy_m", style)
    elif kind == "huge value":
        row.fields["ts"], row.reason = "9" * rng.randrange(100_000, 400_000), r"^ts .* is not a timestamp"
    else:
        raise AssertionError(kind)
    return row


def reading(rng: random.Random, n: int, style: FileStyle, kind: str) -> Row:
    sensor, t = rng.choice(REGISTRY), moment(rng, time_unit(style))
    metric, value = f"{rng.choice(METRICS)}#{n}", rng.choice([decimal_number(rng, -1e6, 1e6), float(rng.randrange(100)), 0.0])
    if kind == "huge id":
        metric = f"{n}-" + "m" * rng.randrange(50_000, 300_000)
    elif kind == "quoted newline":
        metric = f"two\nlines#{n}"
    elif kind == "literal quote":
        sensor, metric = REGISTRY[0], f"5'10\" tall#{n}"  # no delimiter or quote in the other fields of a line written as it is
    padded = f" {sensor} " if style.fmt != "parquet" and rng.random() < 0.2 else sensor  # ids are stripped
    row = Row(kind, {"sensor_id": padded, "ts": spell_time(rng, t, style), "metric": metric, "value": spell_number(rng, value, style)},
              {"sensor_id": sensor, "ts": t, "metric": metric, "value": stored_float(value, style)})
    if kind in ODD_VALID[style.fmt] or kind in ("valid", "duplicate", "blank") or kind in line_breaks(style.fmt):
        return row
    row.stored = None
    what, _, how = kind.partition(":")
    if what in ("sensor_id", "metric"):
        row.fields[what], row.reason = bad_text(rng, how, what, style)
    elif kind == "unknown sensor":
        row.fields["sensor_id"], row.reason = f"ghost-{n}", r"^sensor ghost-\d+ is not in the registry; ingest it"
    elif what == "ts":
        row.fields["ts"], row.reason = bad_time(rng, how, style)
    elif what == "value":
        row.fields["value"], row.reason = bad_number(rng, how, "value", style)
    elif kind == "huge value":
        row.fields["ts"], row.reason = "9" * rng.randrange(100_000, 400_000), r"^ts 9{50}.* is not a timestamp"
    else:
        raise AssertionError(kind)
    return row


def sensor(rng: random.Random, n: int, style: FileStyle, kind: str) -> Row:
    sensor_id, kind_of = f"{rng.choice(ID_STEMS)}{n}", rng.choice(["noise", "air quality", "交通", "water,level"])
    if kind == "literal quote":
        sensor_id, kind_of = f"pole 5'10\" {n}", "noise"
    elif kind == "quoted newline":
        sensor_id = f"pole\n{n}"
    elif kind == "huge id":
        sensor_id = f"{n}-" + "s" * rng.randrange(50_000, 300_000)
    lat, lon = position(rng)
    unit = rng.choice([None, "dB", "µg/m³", "m³/s"])
    padded = f"  {sensor_id} " if style.fmt not in ("parquet",) and rng.random() < 0.2 else sensor_id
    row = Row(kind, {"sensor_id": padded, "kind": kind_of, "lat": spell_number(rng, lat, style), "lon": spell_number(rng, lon, style),
                     "unit": unit if unit else rng.choice([None, MISSING])},
              {"sensor_id": sensor_id.strip(), "kind": kind_of, "lat": stored_float(lat, style), "lon": stored_float(lon, style),
               "unit": unit})
    if kind in ODD_VALID[style.fmt] or kind in ("valid", "duplicate", "blank") or kind in line_breaks(style.fmt):
        return row
    row.stored = None
    what, _, how = kind.partition(":")
    if what in ("sensor_id", "kind"):
        row.fields[what], row.reason = bad_text(rng, how, what, style)
    elif what == "position":
        row.reason = break_position(rng, how, row.fields, style)
    elif kind == "huge value":
        row.fields["lat"], row.reason = "9" * rng.randrange(100_000, 400_000), r"^lat 9{50}.* is not (finite|a number)"
    elif what == "feature":
        row.feature, row.reason = broken_point_feature(rng, how, row.fields)
    else:
        raise AssertionError(kind)
    return row


def broken_point_feature(rng: random.Random, how: str, fields: dict) -> tuple[object, str]:
    """A GeoJSON feature that is no Point feature with properties, and the reason it must be quarantined with."""
    properties = {k: v for k, v in fields.items() if k not in ("lat", "lon") and v is not MISSING}
    point = {"type": "Point", "coordinates": [fields["lon"], fields["lat"]]}
    if how == "no geometry":
        return {"type": "Feature", "geometry": None, "properties": properties}, r"^geometry is None, not a Point$"
    if how == "not a point":
        line = {"type": "LineString", "coordinates": [[121.4, 31.2], [121.5, 31.3]]}
        return {"type": "Feature", "geometry": line, "properties": properties}, r"^geometry is LineString, not a Point$"
    if how == "bad coordinates":
        point["coordinates"] = rng.choice([[], [121.4], None, "121.4, 31.2", {"lon": 121.4}])
        return {"type": "Feature", "geometry": point, "properties": properties}, r"^the Point's coordinates .* are not \[lon, lat\]$"
    if how == "not an object":
        return rng.choice(["a feature", 5, None, [1, 2], True]), r"not a GeoJSON Feature object$"
    if how == "properties not an object":
        properties = rng.choice([["x"], "text", 5])
        return {"type": "Feature", "geometry": point, "properties": properties}, r"^its properties are not a JSON object$"
    properties["sensor_id"] = "\ud800" + str(properties.get("sensor_id"))  # json.dumps writes it as the escape \ud800
    return {"type": "Feature", "geometry": point, "properties": properties}, r"lone surrogate"


def place_shape(rng: random.Random, kind: str):
    """A valid shape: mostly small ones in one city (covers stay small), points anywhere."""
    lat, lon = decimal_number(rng, 31.0, 31.5), decimal_number(rng, 121.2, 121.8)
    side = rng.uniform(0.0004, 0.002)
    corners = [(lon, lat), (lon + side, lat), (lon + side, lat + side), (lon, lat + side)]
    shapes = {
        "point": lambda: shapely.Point(*reversed(position(rng))),
        "square": lambda: shapely.Polygon(corners[::rng.choice([-1, 1])]),  # either way round
        "line": lambda: shapely.LineString([(lon + i * side, lat + rng.uniform(-side, side)) for i in range(rng.randint(2, 4))]),
        "points": lambda: shapely.MultiPoint([(lon, lat), (lon + side, lat - side)]),
    }
    return shapes[rng.choice(list(shapes))]() if kind != "bowtie" else shapely.Polygon(
        [(lon, lat), (lon + side, lat + side), (lon + side, lat), (lon, lat + side), (lon, lat)])


def place(rng: random.Random, n: int, style: FileStyle, kind: str) -> Row:
    place_id = f"{rng.choice(['p', 'p 中 ', 'p:', 'p,'])}{n}"
    shape = place_shape(rng, "bowtie" if kind == "bowtie" else "any")
    if style.fmt == "csv-latlon":
        shape = shapely.Point(*reversed(position(rng)))
    name = rng.choice([None, "Café Ümit", "park", "街角", "a, b"])
    row = Row(kind, {"place_id": place_id, "name": name if name else rng.choice([None, MISSING]), "shape": shape},
              {"place_id": f"places:{place_id}", "geometry": shape, "name": name})
    if kind == "3d":
        row.fields["shape"] = shapely.force_3d(shape, rng.uniform(-10, 100))
    if kind in ODD_VALID[style.fmt] or kind in ("valid", "duplicate", "blank", "bowtie") or kind in line_breaks(style.fmt):
        return row
    row.stored = None
    missing = r"^geometry is missing, empty or could not be repaired$"
    lat, lon = decimal_number(rng, 31.0, 31.5), decimal_number(rng, 121.2, 121.8)
    ring = [[lon, lat], [lon + 0.001, lat], [lon + 0.001, lat + 0.001]]
    nan_ring = [[lon, lat], [math.nan, lat], [lon + 0.001, lat + 0.001], [lon, lat]]
    empty = rng.choice(["Point", "Polygon", "MultiPoint"])
    nan = rng.choice([({"type": "Point", "coordinates": [math.nan, lat]}, f"POINT (NaN {lat})"),
                      ({"type": "Polygon", "coordinates": [nan_ring]}, f"POLYGON (({wkt_points(nan_ring)}))")])
    broken = {  # (shape: a shapely geometry, or (GeoJSON geometry, WKT)), reason
        "no geometry": ((None, ""), missing),
        "empty": (({"type": empty, "coordinates": []}, f"{empty.upper()} EMPTY"), missing),
        "unknown type": (({"type": "Blob", "coordinates": [lon, lat]}, ""), missing),
        "unclosed ring": (({"type": "Polygon", "coordinates": [ring]}, f"POLYGON (({wkt_points(ring)}))"), missing),
        "one-point line": (({"type": "LineString", "coordinates": [[lon, lat]]}, f"LINESTRING ({lon} {lat})"), missing),
        "nan coordinate": (nan, missing),
        "swapped": (shapely.Point(lat, rng.choice([1, -1]) * decimal_number(rng, 91, 180)),
                    r"cannot be covered with H3 cells|covers no H3 cell"),
        "lon range": (shapely.Point(rng.choice([1, -1]) * decimal_number(rng, 181, 400), lat), r"cannot be covered with H3 cells"),
        "null island": (shapely.Point(rng.choice([0.0, -0.0]), 0.0), r"^position \(0, 0\) is a null-island placeholder"),
        "not WKT": ((None, rng.choice(["NOTWKT", "POINT (1)", "POINT(121.4,31.2)", "{}", "   "])), missing),
        "coordinate": ((None, ""), missing),
    }
    row.fields["shape"], row.reason = broken[kind.partition(":")[2]]
    if kind == "place:coordinate":  # a CSV's lat or lon that is no finite number
        row.fields["bad_number"] = rng.choice(["", "north", "NaN", "inf", "1e999"])
    return row


def wkt_points(points: list[list[float]]) -> str:
    return ", ".join(" ".join("NaN" if math.isnan(v) else repr(v) for v in point) for point in points)


def malformations(feed: str, fmt: str) -> list[str]:
    """Every way a row of this feed in this format is generated broken."""
    times = [f"ts:{how}" for how in TIME_BREAKS]
    positions = [f"position:{how}" for how in POSITION_BREAKS]
    by_feed = {
        "pings": ["device_id:missing", "device_id:blank", *times, *positions, "accuracy:negative", "accuracy:not a number"],
        "readings": ["sensor_id:missing", "sensor_id:blank", "unknown sensor", "metric:missing", "metric:blank", *times,
                     "value:missing", "value:text", "value:not finite"],
        "sensors": ["sensor_id:missing", "sensor_id:blank", "kind:missing", "kind:blank", *positions],
    }
    if feed == "places":
        common = ["place:no geometry", "place:swapped", "place:lon range", "place:null island"]
        kinds = {"geojson": common + [f"place:{k}" for k in ("empty", "unknown type", "unclosed ring", "one-point line", "nan coordinate")],
                 "csv-wkt": common + [f"place:{k}" for k in ("empty", "unclosed ring", "one-point line", "nan coordinate", "not WKT")],
                 "csv-latlon": common + ["place:coordinate"]}[fmt]
        return kinds + TEXT_LINE_BREAKS if fmt.startswith("csv") else kinds
    kinds = by_feed[feed] + line_breaks(fmt) + (["huge value"] if fmt != "parquet" else [])
    if feed == "sensors" and fmt == "geojson":
        kinds += [f"feature:{how}" for how in ("no geometry", "not a point", "bad coordinates", "not an object",
                                                "properties not an object", "lone surrogate")]
    return kinds


def valid_kinds(feed: str, fmt: str) -> list[str]:
    return ["valid"] * 4 + ODD_VALID[fmt] + ["duplicate"] * 2 + (["blank"] if fmt in ("csv", "jsonl", "csv-wkt", "csv-latlon") else []) + (
        ["bowtie"] if feed == "places" and fmt != "csv-latlon" else [])


BUILDERS = {"pings": ping, "readings": reading, "sensors": sensor, "places": place}
COLUMNS = {"pings": ["device_id", "ts", "lat", "lon", "accuracy_m"], "readings": ["sensor_id", "ts", "metric", "value"],
           "sensors": ["sensor_id", "kind", "lat", "lon", "unit"]}


# --- a plan into rows, rows into a file ------------------------------------------------------------------------------

FEEDS_AND_FORMATS = [("pings", "csv"), ("pings", "jsonl"), ("pings", "parquet"), ("readings", "csv"), ("readings", "jsonl"),
          ("readings", "parquet"), ("sensors", "csv"), ("sensors", "geojson"), ("sensors", "parquet"), ("places", "geojson"),
          ("places", "csv-wkt"), ("places", "csv-latlon")]
HEADER_AGAIN = {"pings": r"^ts .* is not a timestamp",  # pings withhold a value that is not of its column's kind
                "readings": r"^sensor sensor_id is not in the registry", "sensors": r"^lat lat is not a number",
                "places": r"^geometry is missing"}
SEED = st.integers(0, 2**32 - 1)


def file_plans(feed: str, fmt: str) -> st.SearchStrategy:
    """(kinds and seeds of the malformed rows, of the valid ones, a seed for their order, a seed for the file's style)."""
    return st.tuples(
        st.lists(st.tuples(st.sampled_from(malformations(feed, fmt)), SEED), min_size=MALFORMED_PER_FILE, max_size=MALFORMED_PER_FILE + 30),
        st.lists(st.tuples(st.sampled_from(valid_kinds(feed, fmt)), SEED), min_size=30, max_size=150), SEED, SEED)


def build_rows(feed: str, fmt: str, plan) -> tuple[FileStyle, list[Row], list[str]]:
    """The file's style, its rows in file order (a plain valid row first, so a JSON Lines file names every column at
    once), and its columns in the order the file has them."""
    broken, valid, order, style_seed = plan
    rng = random.Random(order)
    style = FileStyle.draw(fmt, random.Random(style_seed))
    kinds = [("valid", order), *broken, *valid]
    rest = kinds[1:]
    rng.shuffle(rest)
    rows: list[Row] = []
    for n, (kind, seed) in enumerate([kinds[0], *rest]):
        row_rng = random.Random(seed)
        earlier = [r for r in rows if r.valid]
        if kind == "duplicate" and earlier:
            original = row_rng.choice(earlier)
            rows.append(Row("duplicate", original.fields, original.stored, feature=original.feature, copy_of=original))
            continue
        if kind == "blank":
            rows.append(Row("blank", {"text": row_rng.choice(["", "\r"] if fmt.startswith("csv") else ["", "   ", "\t"])}, record=False))
            continue
        row = BUILDERS[feed](row_rng, n, style, "valid" if kind == "duplicate" else kind)
        if kind in line_breaks(fmt):
            row.stored = None
            row.reason = HEADER_AGAIN[feed] if kind == "header again" else JSON_NOT_UTF8 if (fmt, kind) == ("jsonl", "not UTF-8") \
                else LINE_REASONS[kind]
        row.salt = row_rng.randrange(2**32)
        if feed == "places" and fmt.startswith("csv"):
            row.fields = place_csv_fields(row, fmt)
        rows.append(row)
    columns = list(COLUMNS.get(feed) or (["place_id", "name", "wkt"] if fmt == "csv-wkt" else ["place_id", "name", "lat", "lon"]))
    random.Random(style_seed).shuffle(columns)
    return style, rows, columns


def place_csv_fields(row: Row, fmt: str) -> dict:
    shape = row.fields["shape"]
    fields = {"place_id": row.fields["place_id"], "name": row.fields["name"]}
    if fmt == "csv-wkt":
        return fields | {"wkt": shape[1] if isinstance(shape, tuple) else shapely.to_wkt(shape, rounding_precision=-1)}
    if isinstance(shape, tuple):  # no point: empty coordinates, or one that is no finite number
        bad = row.fields.get("bad_number", "")
        return fields | ({"lat": bad, "lon": "121.4"} if random.Random(row.salt).random() < 0.5 else {"lat": "31.2", "lon": bad})
    return fields | {"lat": repr(shape.y), "lon": repr(shape.x)}


def as_text(value) -> str | None:
    """A value as a CSV field (or a Parquet text column) holds it; None for no value."""
    if value is None or value is MISSING:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)


def write_corpus_file(directory: Path, feed: str, style: FileStyle, rows: list[Row], columns: list[str]) -> tuple[Path, list[int | None]]:
    """The file, and each row's position in it (file line, or 1-based row or feature; None for a blank line)."""
    suffix = {"csv-wkt": "csv", "csv-latlon": "csv"}.get(style.fmt, style.fmt)
    path = directory / f"{feed}.{suffix}"
    if style.fmt == "parquet":
        pq.write_table(pa.table({c: parquet_column(c, [r.fields.get(c) for r in rows], style) for c in columns}), path)
        return path, list(range(1, len(rows) + 1))
    if style.fmt == "geojson":
        features = [geojson_feature(feed, row) for row in rows]
        path.write_bytes(b"\xef\xbb\xbf" * style.bom + json.dumps({"type": "FeatureCollection", "features": features}).encode())
        return path, list(range(1, len(rows) + 1))
    text_line = csv_line if style.fmt.startswith("csv") else jsonl_line
    lines = [text_line(row, style, columns) for row in rows]
    header = [(style.delimiter.join(columns) + "\n").encode()] if style.fmt.startswith("csv") else []
    if style.bom:
        (header or lines)[0] = b"\xef\xbb\xbf" + (header or lines)[0]
    if not style.final_newline and rows[-1].record:
        lines[-1] = lines[-1].rstrip(b"\r\n")
    positions, line = [], 1 + len(header)
    for row, data in zip(rows, lines):
        positions.append(line if row.record else None)
        line += data.count(b"\n")
    path.write_bytes(b"".join(header + lines))
    return path, positions


NOT_UTF8 = [b"\xff", b"\xc3\x28", b"\xe9", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]


def csv_line(row: Row, style: FileStyle, columns: list[str]) -> bytes:
    if not row.record:
        return (row.fields["text"] + "\n").encode()
    rng, d = random.Random(row.salt), style.delimiter
    values = [as_text(row.fields.get(c, MISSING)) or "" for c in columns]
    if row.kind == "too few fields":
        values = values[:rng.randint(2, len(values) - 1)]
    elif row.kind == "too many fields":
        values += ["extra"] * rng.randint(1, 3)
    elif row.kind == "header again":
        values = columns
    elif row.kind == "spaces only":
        return b"   \n"
    elif row.kind == "literal quote":  # written as it is: a quote inside an unquoted value is a character like any other
        return (d.join(values) + "\n").encode()
    out = io.StringIO()
    csv.writer(out, delimiter=d, lineterminator="\r\n" if row.kind == "crlf" else "\n",
               quoting=csv.QUOTE_ALL if row.kind == "quote all" else csv.QUOTE_MINIMAL).writerow(values)
    data = out.getvalue().encode()
    if row.kind == "unbalanced quote":  # one field more, opened and never closed: no later line can close it into a row
        return data[:-1] + f'{d}"oops, {rng.choice(["no end", "a note"])}\n'.encode()
    if row.kind == "not UTF-8":
        at = rng.randrange(len(data))
        return data[:at] + rng.choice(NOT_UTF8) + data[at:]
    return data


def jsonl_line(row: Row, style: FileStyle, columns: list[str]) -> bytes:
    if not row.record:
        return (row.fields["text"] + "\n").encode()
    rng = random.Random(row.salt)
    record = {c: row.fields[c] for c in columns if row.fields.get(c, MISSING) is not MISSING}
    if row.kind == "lone surrogate":
        record[columns[0]] = "\ud800" + str(record.get(columns[0]))
    text = json.dumps(record, ensure_ascii=row.kind in ("ascii escapes", "lone surrogate"))
    text = {
        "truncated JSON": lambda: text[:rng.randint(1, len(text) - 2)],
        "not an object": lambda: rng.choice(["[1, 2]", '"a string"', "42", "null", "true", json.dumps(list(record.values()))]),
        "two objects": lambda: text + text, "trailing garbage": lambda: text + rng.choice([" x", ",", " }"]),
        "single quotes": lambda: text.replace('"', "'"),
    }.get(row.kind, lambda: text)()
    data = (text + "\n").encode()
    if row.kind == "not UTF-8":
        at = rng.randrange(len(data) - 1)
        return data[:at] + rng.choice(NOT_UTF8) + data[at:]
    return data


NUMBER_COLUMNS = ("lat", "lon", "accuracy_m", "value")


def parquet_column(column: str, values: list, style: FileStyle) -> pa.Array:
    values = [None if v is MISSING else v for v in values]
    if column in NUMBER_COLUMNS and style.typed:
        return pa.array(values, pa.float32() if style.numbers == "float32" else pa.float64())
    if column == "ts" and style.times == "timestamp":
        return pa.array(values, pa.timestamp("us", tz="UTC"))
    if column == "ts" and style.times == "naive-ms":
        return pa.array([v.astimezone(UTC).replace(tzinfo=None) if v and v.tzinfo else v for v in values], pa.timestamp("ms"))
    if column == "ts" and style.times == "epoch":
        return pa.array([int(v.timestamp()) if isinstance(v, dt.datetime) else v for v in values], pa.int64())
    if column == "device_id" and style.int_ids:
        return pa.array(values, pa.int64())
    return pa.array([as_text(v) for v in values], pa.string())


def geojson_feature(feed: str, row: Row):
    if row.feature is not MISSING:
        return row.feature
    if feed == "places":
        shape = row.fields["shape"]
        geometry = shape[0] if isinstance(shape, tuple) else shapely.geometry.mapping(shape)
        properties = {k: v for k in ("place_id", "name") if (v := row.fields[k]) is not MISSING}
        return {"type": "Feature", "geometry": geometry, "properties": properties}
    coordinates = [None if row.fields[c] is MISSING else row.fields[c] for c in ("lon", "lat")]
    if row.kind == "3d":
        coordinates.append(random.Random(row.salt).uniform(-10, 300))
    properties = {k: v for k in ("sensor_id", "kind", "unit") if (v := row.fields[k]) is not MISSING}
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": coordinates}, "properties": properties}


# --- the ingest, and the oracle's verdict ----------------------------------------------------------------------------


def registry_file(directory: Path) -> Path:
    """The sensors a readings file may name, at distinct places in the city."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sensor_id", "kind", "lat", "lon"])
    writer.writerows([sensor_id, "air", 31.2 + i / 100, 121.4 + i / 100] for i, sensor_id in enumerate(REGISTRY))
    (directory / "registry.csv").write_text(out.getvalue())
    return directory / "registry.csv"


def ingest_corpus_file(lake: Lake, feed: str, path: Path, style: FileStyle):
    delimiter = style.delimiter if style.pass_delimiter else None
    if feed == "pings":
        return ingest_pings(lake, path, key=KEY, delimiter=delimiter, batch_rows=style.batch_rows)
    if feed == "readings":
        ingest_sensors(lake, registry_file(path.parent))
        return ingest_readings(lake, path, delimiter=delimiter, batch_rows=style.batch_rows)
    if feed == "sensors":
        return ingest_sensors(lake, path)
    return ingest_places(lake, path)


def check_against_oracle(lake: Lake, feed: str, style: FileStyle, rows: list[Row], positions: list[int | None], report) -> int:
    """Every valid row landed once with its values, every malformed one is quarantined at its position with its reason,
    and the counts add up. Returns how many malformed rows the file held."""
    from citylake.lake import scan

    records = [(row, at) for row, at in zip(rows, positions) if row.record]
    valid = [row for row, _ in records if row.valid]
    broken = {at: row for row, at in records if not row.valid and row.copy_of is None}
    copies = sum(row.copy_of is not None for row, _ in records)
    quarantine = scan(lake, "quarantine").collect()
    got = dict(zip(quarantine["row_number"], zip(quarantine["reason"], quarantine["raw"])))
    assert set(got) == set(broken), describe("quarantined at other positions", sorted(set(got) ^ set(broken)), got, broken)
    assert quarantine.height == len(broken) and set(quarantine["table_name"]) <= {feed}
    # a sensors file read in two chunks (an open quote near the end of the first ends it early) upserts a repeat in the
    # second as an update: accepted, and counted as replacing a row of the same key (the only feed that replaces)
    updates = report.updated
    assert updates == 0 or feed == "sensors"
    counts = (report.rows_in, report.accepted - updates, report.rejected, report.duplicates + updates)
    expected = (len(records), len(valid), len(broken), copies)
    assert counts == expected, f"rows in, accepted, rejected, duplicates: {counts} != {expected}"
    wrong = [at for at, row in broken.items() if not got[at][0] or not re.search(row.reason, got[at][0])]
    assert not wrong, describe("quarantined with an unexpected reason", wrong, got, broken)
    if feed == "pings":  # no raw device id in quarantine, not even in part of a line
        raw_ids = {str(r.fields.get("device_id")) for r, _ in records if r.kind != "header again"}
        leaked = [at for raw_id in raw_ids for at, (reason, raw) in got.items() if len(raw_id.strip()) > 2 and raw_id in reason + raw]
        assert not leaked, describe("quarantined with a raw device id in their text", leaked, got, broken)
    if feed == "places":
        ids = [at for at, row in broken.items() if row.kind.startswith("place:") and got[at][1] != f"places:{row.fields['place_id']}"]
        assert not ids, describe("quarantined without the place's id as its text", ids, got, broken)
    STORED_CHECKS[feed](lake, valid, style)
    return len(broken)


def describe(what: str, positions: list[int], got: dict, broken: dict[int, Row]) -> str:
    shown = [f"  {at}: {broken[at].kind if at in broken else 'valid'} {str(broken[at].fields)[:300] if at in broken else ''} "
             f"expected {broken[at].reason if at in broken else 'no quarantine'!r}, got {got.get(at, ('nothing',))[0][:200]!r}"
             for at in positions[:8]]
    return f"{len(positions)} rows {what}:\n" + "\n".join(shown)


def check_pings(lake: Lake, valid: list[Row], style: FileStyle) -> None:
    from citylake.lake import scan

    table = scan(lake, "pings").collect()
    assert table.height == len(valid)
    landed = {r["device_id"]: r for r in table.iter_rows(named=True)}
    for row in valid:
        want, got = row.stored, landed.get(row.stored["device_id"])
        assert got is not None, f"a valid {row.kind} row did not land: {row.fields}"
        assert got["ts"] == want["ts"], (row.fields, got["ts"], want["ts"])
        assert near(got["lat"], want["lat"], style) and near(got["lon"], want["lon"], style), (row.fields, got)
        assert got["accuracy_m"] == want["accuracy_m"], (row.fields, got)
        assert got["h3_cell"] == int(h3.latlng_to_cell(got["lat"], got["lon"], lake.cell_res), 16)


def check_readings(lake: Lake, valid: list[Row], style: FileStyle) -> None:
    from citylake.lake import scan

    table = scan(lake, "readings").collect()
    assert table.height == len(valid)
    landed = {(r["sensor_id"], r["ts"], r["metric"]): r["value"] for r in table.iter_rows(named=True)}
    for row in valid:
        key = (row.stored["sensor_id"], row.stored["ts"], row.stored["metric"])
        assert landed.get(key, "absent") == row.stored["value"], (row.kind, row.fields, landed.get(key, "absent"))


def check_sensors(lake: Lake, valid: list[Row], style: FileStyle) -> None:
    from citylake.lake import scan

    table = scan(lake, "sensors").collect()
    assert table.height == len(valid)
    landed = {r["sensor_id"]: r for r in table.iter_rows(named=True)}
    for row in valid:
        got = landed.get(row.stored["sensor_id"])
        assert got is not None, f"a valid {row.kind} row did not land: {row.fields}"
        assert (got["kind"], got["lat"], got["lon"]) == (row.stored["kind"], row.stored["lat"], row.stored["lon"]), (row.fields, got)
        assert (got["unit"] or None) == row.stored["unit"], (row.fields, got)


def check_places(lake: Lake, valid: list[Row], style: FileStyle) -> None:
    from citylake.lake import scan

    table = scan(lake, "places").collect()
    assert table.height == len(valid)
    landed = {r["place_id"]: r for r in table.iter_rows(named=True)}
    for row in valid:
        got = landed.get(row.stored["place_id"])
        assert got is not None, f"a valid {row.kind} place did not land: {row.fields}"
        shape, want = shapely.from_wkb(got["geometry"]), row.stored["geometry"]
        if row.kind == "bowtie":  # repaired: two triangles meeting at the crossing
            assert shape.is_valid and shape.geom_type == "MultiPolygon", shape
        else:
            assert shapely.equals_exact(shapely.normalize(shape), shapely.normalize(want), tolerance=1e-9), (shape, want)
        assert got["name"] == row.stored["name"], (got["name"], row.stored["name"])
    covered = set(scan(lake, "place_cells").select("place_id").unique().collect()["place_id"])
    assert covered == set(landed), "every place has cells, and no cells belong to a place that is not in places"


STORED_CHECKS = {"pings": check_pings, "readings": check_readings, "sensors": check_sensors, "places": check_places}


@pytest.mark.parametrize(("feed", "fmt"), FEEDS_AND_FORMATS, ids=[f"{feed}-{fmt}" for feed, fmt in FEEDS_AND_FORMATS])
@settings(max_examples=CORPUS_EXAMPLES, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_a_generated_file_lands_every_valid_row_once_and_quarantines_every_other(tmp_path_factory, feed, fmt, data):
    """Files of every feed and format mixing valid rows (plain and oddly spelt) with malformed ones: the ingest never
    raises, every valid row lands exactly once with its values, every malformed row is in quarantine at its line (or
    row, or feature) with the reason the generator expects, and rows in = accepted + rejected + duplicates."""
    style, rows, columns = build_rows(feed, fmt, data.draw(file_plans(feed, fmt), label="plan"))
    directory = tmp_path_factory.mktemp(f"{feed}-{fmt}")
    path, positions = write_corpus_file(directory, feed, style, rows, columns)
    lake = with_key(Lake.init(directory / "lake"))
    report = ingest_corpus_file(lake, feed, path, style)
    MALFORMED_RECORDS[f"{feed}/{fmt}"] += check_against_oracle(lake, feed, style, rows, positions, report)


CLI_FILES = [("pings", "csv", 1), ("pings", "jsonl", 2), ("readings", "parquet", 3), ("sensors", "geojson", 4), ("places", "csv-wkt", 5)]


@pytest.mark.parametrize(("feed", "fmt", "seed"), CLI_FILES, ids=[f"{feed}-{fmt}" for feed, fmt, _ in CLI_FILES])
def test_a_generated_file_through_the_cli(tmp_path, feed, fmt, seed):
    """The same corpus through `python -m citylake.cli ingest` as a user runs it: exit 0, no traceback or panic, the
    summary line's counts, and the oracle's verdict on the lake."""
    rng = random.Random(seed)
    plan = ([(rng.choice(malformations(feed, fmt)), rng.randrange(2**32)) for _ in range(MALFORMED_PER_FILE)],
            [(rng.choice(valid_kinds(feed, fmt)), rng.randrange(2**32)) for _ in range(80)], seed, seed)
    style, rows, columns = build_rows(feed, fmt, plan)
    style.batch_rows = 1_000_000  # the CLI reads with the ingest.batch_rows setting
    path, positions = write_corpus_file(tmp_path, feed, style, rows, columns)
    lake = with_key(Lake.init(tmp_path / "lake"))
    if feed == "readings":
        ingest_sensors(lake, registry_file(tmp_path))
    delimiter = ["--delimiter", style.delimiter] if style.pass_delimiter and feed in ("pings", "readings") else []
    result = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "ingest", feed, str(path), *delimiter],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY})
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in output and "panicked" not in output, output[-3000:]
    summary = r"([\d,]+) accepted(?: \(([\d,]+) replacing rows of the same key\))?, ([\d,]+) rejected.*?([\d,]+) duplicates skipped"
    counts = re.search(summary, result.stdout)
    accepted, updated, rejected, duplicates = (int((n or "0").replace(",", "")) for n in counts.groups())
    report = SimpleNamespace(rows_in=accepted + rejected + duplicates, accepted=accepted, rejected=rejected, duplicates=duplicates,
                             updated=updated)
    MALFORMED_RECORDS[f"{feed}/{fmt} (cli)"] += check_against_oracle(lake, feed, style, rows, positions, report)


# --- regressions the corpus found, as named cases ----------------------------------------------------------------------


def quarantined(lake: Lake) -> list[tuple[int, str, str]]:
    return duckdb_for(lake).execute("SELECT row_number, reason, raw FROM quarantine ORDER BY row_number").fetchall()


def test_pings_quarantine_never_shows_a_raw_device_id_wherever_its_column_is(tmp_path):
    """A rejected line's id was replaced at the id's place in the table's column order, not the file's: with device_id
    not the first column, the raw id stayed in quarantine. A JSON Lines line that is no JSON was split at commas, and
    its id left in place too."""
    (tmp_path / "p.csv").write_bytes(b"ts,lat,device_id,lon\n2026-11-01T00:00:00Z,31.2,secret-1,121.4\n"
                                     b"2026-11-01T00:00:00Z,31.2,secret-2,121.4,extra\n"
                                     b"2026-11-01T00:00:00Z\xff,31.2,secret-3,121.4\n"
                                     b'2026-11-01T00:00:00Z,31.2,secret-4,121.4,"open\n')
    (tmp_path / "p.jsonl").write_text('{"ts": "2026-11-01T00:00:00Z", "lat": 31.2, "device_id": "secret-5", "lon": 121.4}\n'
                                      '{"ts": "2026-11-01T00:00:00Z", "device_id": "secret-6", "lat": 31.2, "lon": 121.4\n')
    lake = Lake.init(tmp_path / "lake")
    assert ingest_pings(lake, tmp_path / "p.csv", key=KEY).rejected == 3
    assert ingest_pings(lake, tmp_path / "p.jsonl", key=KEY).rejected == 1
    rows = quarantined(lake)
    assert not [row for row in rows if "secret" in row[1] + row[2]], rows
    not_utf8 = [raw.split(",")[2] for _, reason, raw in rows if reason == "is not valid UTF-8 text"]
    assert not_utf8 == [f"pseudonym:{pseudonym('secret-3', KEY)}"]


def test_a_wrong_width_line_that_is_not_utf8_is_quarantined(tmp_path):
    """Arrow cannot show such a line to the invalid-row handler (it fails to decode it, says "Exception ignored" with a
    traceback on stderr, then reports a parse error): lines that are not UTF-8 are set aside before Arrow parses."""
    (tmp_path / "p.csv").write_bytes(HEADER + good_rows(1) + b"d\xff,x,2026-11-01T00:00:00Z,31.2,121.4,5\n" + good_rows(1, start=2))
    lake = Lake.init(tmp_path / "lake")
    report = ingest_pings(lake, tmp_path / "p.csv", key=KEY)
    assert (report.accepted, report.rejected) == (2, 1)
    assert quarantined(lake)[0][:2] == (3, "is not valid UTF-8 text")


@pytest.mark.parametrize("newline", [b"", b"\n"])
def test_a_file_cut_off_inside_a_quoted_value_keeps_its_rows(tmp_path, newline):
    """Its last line opens a quoted value that never closes; set aside, it left its block empty, which Arrow refuses
    ("Empty CSV file") without a final newline."""
    (tmp_path / "p.csv").write_bytes(HEADER + good_rows(2) + b'cut,"2026-11-01T00:00:00Z,31.2' + newline)
    lake = Lake.init(tmp_path / "lake")
    report = ingest_pings(lake, tmp_path / "p.csv", key=KEY)
    assert (report.accepted, report.rejected) == (2, 1) and quarantined(lake)[0][0] == 4


def test_json_lines_with_lone_surrogates_are_quarantined(tmp_path):
    """A lone surrogate, escaped (valid JSON) or as the bytes json.loads reads as one, is no text: Arrow could not hold it."""
    good = '{"device_id": "d%s", "ts": "2026-11-01T00:00:00Z", "lat": 31.2, "lon": 121.4}\n'
    lines = [good % 1, good % "\\ud800", good % 3, good % "\udc80"]  # an escape; a surrogate's own bytes
    (tmp_path / "p.jsonl").write_bytes("".join(lines).encode("utf-8", "surrogatepass"))
    lake = Lake.init(tmp_path / "lake")
    report = ingest_pings(lake, tmp_path / "p.jsonl", key=KEY)
    assert (report.accepted, report.rejected) == (2, 2)
    assert [(line, reason.split(" (")[0]) for line, reason, _ in quarantined(lake)] == [
        (2, "holds a lone surrogate escape"), (4, "is not valid JSON")]


@pytest.mark.parametrize("column", ["device_id", "sensor_id", "kind", "metric"])
def test_an_id_or_kind_of_only_spaces_is_missing(tmp_path, column):
    """It passed as present, and landed stripped to an empty id or kind (pings: hashed as a device named by spaces)."""
    lake = with_key(Lake.init(tmp_path / "lake"))
    if column == "device_id":
        (tmp_path / "f.csv").write_text("device_id,ts,lat,lon\n   ,2026-11-01T00:00:00Z,31.2,121.4\nd,2026-11-01T00:00:00Z,31.2,121.4\n")
        report = ingest_pings(lake, tmp_path / "f.csv", key=KEY)
    elif column == "metric":
        ingest_sensors(lake, registry_file(tmp_path))
        (tmp_path / "f.csv").write_text(f"sensor_id,ts,metric,value\n{REGISTRY[0]},2026-11-01T00:00:00Z,\t ,1\n"
                                        f"{REGISTRY[0]},2026-11-01T00:00:00Z,pm10,2\n")
        report = ingest_readings(lake, tmp_path / "f.csv")
    else:
        row = {"sensor_id": "s1", "kind": "air", column: " \t "}
        (tmp_path / "f.csv").write_text(f"sensor_id,kind,lat,lon\n{row['sensor_id']},{row['kind']},31.2,121.4\ns2,air,31.3,121.4\n")
        report = ingest_sensors(lake, tmp_path / "f.csv")
    assert (report.accepted, report.rejected) == (1, 1)
    assert quarantined(lake)[0][:2] == (2, f"{column} is missing")


def test_sensor_features_that_are_no_point_features_are_quarantined(tmp_path):
    """Each of these raised (TypeError, AttributeError, ValueError from unpacking) and stopped the file."""
    point = {"type": "Point", "coordinates": [121.4, 31.2]}
    props = {"kind": "noise"}
    features = [
        {"type": "Feature", "geometry": point, "properties": {"sensor_id": "s1", **props}},
        "a string", None, [1, 2],
        {"type": "Feature", "geometry": "Point", "properties": {"sensor_id": "s5", **props}},
        *({"type": "Feature", "geometry": {"type": "Point", "coordinates": c}, "properties": {"sensor_id": "s", **props}}
          for c in (None, [], [121.4], "121.4,31.2")),
        {"type": "Feature", "geometry": point, "properties": ["sensor_id", "s10"]},
        {"type": "Feature", "geometry": point, "properties": {"sensor_id": "\ud800", **props}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [[121.4], 31.2]}, "properties": {"sensor_id": "s12", **props}},
        {"type": "Feature", "geometry": point, "properties": {"sensor_id": "s13", **props}},
    ]
    (tmp_path / "s.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    lake = Lake.init(tmp_path / "lake")
    report = ingest_sensors(lake, tmp_path / "s.geojson")
    rows = quarantined(lake)
    assert (report.accepted, report.rejected) == (2, 11) and [line for line, _, _ in rows] == list(range(2, 13)), rows
    assert [reason.split(" ")[0] for _, reason, _ in rows] == ["is", "is", "is", "geometry", *["the"] * 4, "its", "holds", "lon"]


ODD_PARQUET_COLUMNS = {  # column -> (type, values of rows 1 and 2), in a pings file whose other columns are valid
    "lat": (pa.list_(pa.float64()), [[31.2], [31.3]]),
    "lon": (pa.map_(pa.string(), pa.float64()), [[("lon", 121.4)], []]),
    "ts": (pa.duration("s"), [1, 2]),
    "device_id": (pa.binary(), [b"d1", b"d2\xff"]),
    "accuracy_m": (pa.float16(), [np.float16(5), np.float16(-1)]),
}


@pytest.mark.parametrize("column", list(ODD_PARQUET_COLUMNS))
def test_parquet_columns_of_any_type_are_checked_row_by_row(tmp_path, column):
    """Polars cannot cast lists, maps, durations or bytes that are not UTF-8 to text: the ingest raised (half floats it can).
    Nested values are now their JSON text (as JSON Lines values are), bytes their text, a row whose bytes are not UTF-8
    set aside as a CSV line that is not UTF-8 is."""
    kind, values = ODD_PARQUET_COLUMNS[column]
    columns = {"device_id": ["d1", "d2"], "ts": ["2026-11-01T00:00:00Z"] * 2, "lat": [31.2, 31.3], "lon": [121.4, 121.4],
               "accuracy_m": [5.0, 6.0]}
    columns[column] = pa.array(values, kind)
    pq.write_table(pa.table(columns), tmp_path / "p.parquet")
    lake = Lake.init(tmp_path / "lake")
    report = ingest_pings(lake, tmp_path / "p.parquet", key=KEY)
    landed = {"device_id": 1, "accuracy_m": 1}.get(column, 0)  # d1; an accuracy of 5 (-1 is negative)
    assert (report.rows_in, report.accepted, report.rejected) == (2, landed, 2 - landed)
    assert all(reason for _, reason, _ in quarantined(lake))


def place_feature(geometry, place_id: str) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": {"place_id": place_id}}


def test_places_that_cannot_be_built_are_quarantined_and_the_rest_land(lake, tmp_path):
    """An unclosed ring or a one-point line refused the whole file (shapely cannot build them from GDAL's WKB); a NaN
    coordinate raised from make_valid; a point at (0, 0) landed, though pings and sensors there are placeholders."""
    features = [place_feature({"type": "Point", "coordinates": [121.4, 31.2]}, "a"),
                place_feature({"type": "Polygon", "coordinates": [[[121.4, 31.2], [121.41, 31.2], [121.41, 31.21]]]}, "b"),
                place_feature({"type": "LineString", "coordinates": [[121.4, 31.2]]}, "c"),
                place_feature({"type": "Point", "coordinates": [math.nan, 31.2]}, "d"),
                place_feature({"type": "Polygon", "coordinates": [[[121.4, 31.2], [math.nan, 31.2], [121.41, 31.21], [121.4, 31.2]]]}, "e"),
                place_feature({"type": "Point", "coordinates": [0, 0]}, "f"),
                place_feature({"type": "Point", "coordinates": [121.41, 31.2]}, "g")]
    (tmp_path / "p.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    report = ingest_places(lake, tmp_path / "p.geojson")
    assert (report.accepted, report.rejected) == (2, 5)
    rows = quarantined(lake)
    assert [(line, raw) for line, _, raw in rows] == [(2, "p:b"), (3, "p:c"), (4, "p:d"), (5, "p:e"), (6, "p:f")]
    assert rows[-1][1].startswith("position (0, 0) is a null-island placeholder")


def test_a_places_csv_quarantines_bad_lines_at_their_file_line(lake, tmp_path):
    """A line of the wrong width, one that is not UTF-8 or an empty WKT value refused the whole file, as did one shape
    outside ±180/±90 ("coordinates are not degrees"); quarantined rows were numbered by data row, not file line."""
    (tmp_path / "p.csv").write_bytes(b"place_id,name,wkt\n"
                                     b"a,A,POINT (121.4 31.2)\n"          # 2
                                     b"\n"                                # 3: blank
                                     b"b,B,POINT (121.41 31.2),extra\n"   # 4: wrong width
                                     b'c,"C\nover two lines",POINT (121.42 31.2)\n'  # 5-6
                                     b"d,D\xff,POINT (121.43 31.2)\n"     # 7: not UTF-8
                                     b"e,E,\n"                            # 8: no shape
                                     b"f,F,POINT (31.2 121.44)\n"         # 9: swapped
                                     b"g,G,POINT (121.45 31.2)\n")        # 10
    report = ingest_places(lake, tmp_path / "p.csv")
    assert (report.rows_in, report.accepted, report.rejected) == (7, 3, 4)
    rows = quarantined(lake)
    assert [line for line, _, _ in rows] == [4, 7, 8, 9]
    assert [raw for _, _, raw in rows][2:] == ["p:e", "p:f"] and rows[0][2] == "b,B,POINT (121.41 31.2),extra"
    assert sorted(scan_places(lake)) == ["p:a", "p:c", "p:g"]


def scan_places(lake: Lake) -> list[str]:
    from citylake.lake import scan

    return scan(lake, "places").collect()["place_id"].to_list()


@pytest.mark.xfail(strict=True, reason="not fixed: GDAL skips a GeoJSON feature that is no object without a word (a warning at most), "
                                       "so it is neither landed nor quarantined, and the features after it are numbered one less")
def test_a_geojson_place_that_is_no_object_is_quarantined(lake, tmp_path):
    features = [place_feature({"type": "Point", "coordinates": [121.4, 31.2]}, "a"), "not a feature",
                place_feature({"type": "Point", "coordinates": [121.41, 31.2]}, "c")]
    (tmp_path / "p.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    report = ingest_places(lake, tmp_path / "p.geojson")
    assert (report.rows_in, report.accepted, report.rejected) == (3, 2, 1)


def test_a_registry_update_is_in_the_counts(lake, tmp_path):
    (tmp_path / "s.csv").write_text("sensor_id,kind,lat,lon\ns1,air,31.2,121.4\n")
    (tmp_path / "moved.csv").write_text("sensor_id,kind,lat,lon\ns1,air,31.3,121.5\n")
    ingest_sensors(lake, tmp_path / "s.csv")
    report = ingest_sensors(lake, tmp_path / "moved.csv")
    assert report.rows_in == report.accepted + report.rejected + report.duplicates
    assert (report.accepted, report.updated) == (1, 1) and "1 replacing rows of the same key" in report.line()


def test_the_corpus_held_at_least_10000_malformed_records():
    """Run last (pytest keeps file order): the generated files of this session held at least 10,000 malformed records
    across every feed and format (run the whole file: picked alone, it finds no corpus and says so)."""
    generated = {key for key in MALFORMED_RECORDS if "(cli)" not in key}
    assert generated == {f"{feed}/{fmt}" for feed, fmt in FEEDS_AND_FORMATS}, \
        f"the generated corpus ran for {sorted(generated) or 'no format'} only; run the whole of tests/test_malformed.py"
    total = sum(MALFORMED_RECORDS.values())
    assert total >= 10_000, dict(MALFORMED_RECORDS)
    print(f"\nmalformed records generated: {total:,} ({', '.join(f'{k} {n:,}' for k, n in sorted(MALFORMED_RECORDS.items()))})")
