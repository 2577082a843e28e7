"""Every fault of the citylake command is one line on stderr and a non-zero exit, never a traceback or Rust panic text:
read-only and other users' lakes, a file as the lake, a damaged citylake.json, an --out that cannot be written, Ctrl-C
(in a command and in the shell), a real delta-rs panic, and Dask's shutdown. Each runs the real command in a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pytest
from conftest import TEST_KEY, generated_city_lake, make_pings, with_key

from citylake.cli.stderr import PanicFilter
from citylake.lake import Lake

pytestmark = pytest.mark.integration
NOBODY = 65534
STEWARD = {"CITYLAKE_PSEUDONYM_KEY": TEST_KEY}
# Root passes every permission check; without its capabilities it meets file modes as any user does.
AS_A_USER = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else []
needs_a_user = pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="dropping root's capabilities needs setpriv")
PANIC = (b"\nthread 'tokio-rt-worker' (4242) panicked at /home/runner/.cargo/registry/src/object_store-0.13.2/src/buffered.rs:369:41:\n"
         b"Already shut down\n")
BACKTRACE = b"stack backtrace:\n   0:     0x7feed1f08602 - <unknown>\n   1:     0x7feecd3588fa - <unknown>\n" \
            b"note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n"
NOTE = b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"


def citylake(*args: str, env: dict | None = None, user: bool = False, timeout: int = 300, **kw) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "citylake.cli", *args]
    return subprocess.run([*AS_A_USER, *command] if user else command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, **kw)


def one_line(result: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> str:
    """The one line a fault printed; fails on any other exit code, a second line, a traceback or panic text."""
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert "Traceback" not in result.stderr and "panicked" not in result.stderr and "RUST_BACKTRACE" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Lake:
    return generated_city_lake(tmp_path_factory.mktemp("errors"), devices=60, days=2, seed=3)


def copy_of(lake: Lake, where: Path) -> Path:
    shutil.copytree(lake.root, where, symlinks=True)
    return where


def set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        os.chmod(path, mode | 0o200 if writable else mode & ~0o222)


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


# -- 1. Rust panic text never reaches the terminal ------------------------------------------------------------------------


def test_the_panic_filter_drops_panic_reports_and_passes_everything_else():
    lines = PanicFilter()
    out = lines.feed(b"progress 1\n" + PANIC + BACKTRACE, now=0.0)
    out += lines.feed(b"progress 2\n\n", now=1.0)  # after the burst: lines pass again, a blank one too (held, then let go)
    out += lines.feed(PANIC + NOTE + b"half a li", now=2.0)
    out += lines.feed(b"ne\n", now=3.0) + lines.idle(now=4.0)
    assert out == b"progress 1\nprogress 2\n\nhalf a line\n"
    assert lines.panics == 2 and lines.first_message == "Already shut down"
    waiting = PanicFilter()
    assert waiting.feed(b"no newline yet", now=0.0) == b"" and waiting.idle(now=0.2) == b"no newline yet"


@needs_a_user
@pytest.mark.parametrize("backtrace", ["0", "1"])
def test_a_real_delta_rs_panic_is_one_line(city, tmp_path, backtrace):
    """delta-rs panics ("Already shut down") when it cannot write a file into a partition directory it may not write."""
    root = copy_of(city, tmp_path / "lake")
    for partition in (root / "tables" / "readings").glob("partition_cell=*"):
        set_writable(partition, False)
    readings = pcsv.read_csv(city.root.parent / "city" / "readings.csv")
    later = readings.set_column(1, "ts", pc.add(readings["ts"], pa.scalar(dt.timedelta(seconds=1))))  # new keys, same partitions
    pcsv.write_csv(later, tmp_path / "later.csv")
    ingest = ("--lake", str(root), "ingest", "readings", str(tmp_path / "later.csv"))
    try:
        raw = citylake(*ingest, env={"CITYLAKE_DEBUG": "1", "RUST_BACKTRACE": backtrace}, user=True)
        assert "panicked at" in raw.stderr and "Already shut down" in raw.stderr, "delta-rs no longer panics here; find another way"
        one_line(citylake(*ingest, env={"RUST_BACKTRACE": backtrace}, user=True), "not writable", f"chmod -R u+w {root}")
    finally:
        set_writable(root, True)


def program(text: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", text], capture_output=True, text=True, timeout=60, **kw)


def test_native_lines_pass_in_order_and_all_arrive_before_the_command_ends():
    done = program(
        "import os, sys, time\nfrom citylake.cli import stderr\nstderr.start()\n"
        "os.write(2, b'native 1\\n')\nprint('from python', file=sys.stderr)\n"
        f"os.write(2, {PANIC + NOTE!r})\ntime.sleep(0.4)\n"
        "for i in range(2, 2001):\n    os.write(2, f'native {i}\\n'.encode())\n"
        "os.write(2, b'the last, without a newline')\nstderr.finish()\n"
        "os.write(2, b'after the end: dropped\\n')\nprint('shutting down: dropped', file=sys.stderr)\n")
    lines = done.stderr.splitlines()
    assert done.returncode == 0 and "from python" in lines and "panicked" not in done.stderr and "dropped" not in done.stderr
    native = [line for line in lines if line != "from python"]
    assert native == [f"native {i}" for i in range(1, 2001)] + ["the last, without a newline"]


def test_what_a_killed_citylake_wrote_last_still_arrives():
    done = program("import os\nfrom citylake.cli import stderr\nstderr.start()\nos.write(2, b'last words\\n')\nos._exit(3)\n")
    assert done.returncode == 3 and done.stderr == "last words\n"
    aborted = program(f"import os\nfrom citylake.cli import stderr\nstderr.start()\nos.write(2, {PANIC + NOTE!r})\nos.abort()\n")
    assert aborted.returncode == -signal.SIGABRT
    one_line(aborted, "a native library failed (Already shut down)", code=-signal.SIGABRT)


def test_python_still_writes_to_the_terminal_and_a_closed_stderr_breaks_nothing(tmp_path):
    controller, terminal = pty.openpty()
    check = "import os, sys\nfrom citylake.cli import stderr\nstderr.start()\nprint(sys.stderr.isatty(), os.isatty(2), flush=True)\n"
    subprocess.run([sys.executable, "-c", check], stdin=terminal, stdout=terminal, stderr=terminal, timeout=60)
    os.close(terminal)
    assert os.read(controller, 1000).split() == [b"True", b"False"]  # Python's stderr is the terminal; fd 2 the relay
    os.close(controller)
    closed = {"stdout": subprocess.PIPE, "preexec_fn": lambda: os.close(2)}
    help_ = subprocess.run([sys.executable, "-m", "citylake.cli", "--help"], text=True, timeout=60, **closed)
    assert help_.returncode == 0 and "Usage:" in help_.stdout
    missing = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(tmp_path / "none"), "tables"], timeout=60, **closed)
    assert missing.returncode == 1


# -- 2. a lake this user cannot write --------------------------------------------------------------------------------------

WRITES = [
    ["ingest", "places", "{city}/places.geojson"],
    ["ingest", "pings", "{city}/pings.csv"],
    ["init"],
    ["maintain", "compact"],
    ["maintain", "vacuum", "--apply"],
    ["publish"],
]


@needs_a_user
@pytest.mark.parametrize("command", WRITES, ids=lambda c: " ".join(c[:2]))
def test_a_read_only_lake_is_refused_in_one_line_before_any_work(city, tmp_path, command):
    root = copy_of(city, tmp_path / "lake")
    set_writable(root, False)
    before = snapshot(root)
    try:
        args = [part.format(city=city.root.parent / "city") for part in command]
        one_line(citylake("--lake", str(root), *args, env=STEWARD, user=True), "is not writable by you", f"chmod -R u+w {root}")
        assert snapshot(root) == before
    finally:
        set_writable(root, True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="giving the lake to another user needs root")
@pytest.mark.parametrize("capabilities", [False, True], ids=["a user", "root"])
@pytest.mark.parametrize("command", WRITES[:1] + WRITES[2:], ids=lambda c: " ".join(c[:2]))
def test_another_users_lake_is_refused_in_one_line(city, tmp_path, command, capabilities):
    """Another user's lake is theirs to change: refused for a user, and for root too (whose permission checks all pass:
    a lake planted by another user, writable by all, would otherwise take a root steward's rows where its maker reads)."""
    root = copy_of(city, tmp_path / "lake")
    for path in [root, *root.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    before = snapshot(root)
    args = [part.format(city=city.root.parent / "city") for part in command]
    one_line(citylake("--lake", str(root), *args, env=STEWARD, user=not capabilities), "not writable by you", "belongs to nobody",
             "run the command as nobody")
    assert snapshot(root) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a directory or a link as another user needs root")
def test_a_lake_is_not_made_in_a_directory_or_through_a_link_another_user_planted(tmp_path):
    """Where a steward would make a lake, another user plants a directory writable by all, or a link to one of the
    steward's private directories: `init` refuses both (as root too), and leaves the private directory as it was."""
    planted = tmp_path / "citylake-data"
    planted.mkdir()
    os.chown(planted, NOBODY, NOBODY)
    planted.chmod(0o777)
    one_line(citylake("--lake", str(planted), "init"), "cannot make a lake", "belongs to nobody", "a directory of your own")
    assert not any(planted.iterdir())
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    link = tmp_path / "linked-lake"
    link.symlink_to(private)
    os.lchown(link, NOBODY, NOBODY)
    one_line(citylake("--lake", str(link), "init"), "cannot make a lake", "belongs to nobody")
    assert private.stat().st_mode & 0o777 == 0o700 and not any(private.iterdir())


def test_a_lake_key_or_settings_file_another_user_could_swap_is_refused(city, tmp_path):
    """A directory above the lake, its key file or a settings file that anyone can change (and is not sticky) lets
    another user exchange what is below it between a command's checks and its writes (the lake for theirs, the key for
    one they know): each is refused in one line, before any work; under a sticky directory (as /tmp is), taken. As
    root, a link on the way that another user made is refused too."""
    pings = str(city.root.parent / "city" / "pings.csv")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    root = copy_of(city, shared / "lake")
    before = snapshot(root)
    one_line(citylake("--lake", str(root), "ingest", "pings", pings, env=STEWARD), "another user could swap it", f"in {shared}",
             "anyone can change it (mode 777)")
    assert snapshot(root) == before
    one_line(citylake("--lake", str(shared / "new"), "init"), "cannot make a lake", "another user could swap it")
    assert not (shared / "new").exists()
    key = shared / "steward.key"
    key.write_text(TEST_KEY + "\n")
    key.chmod(0o600)
    with_key_file = {"CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(key)}
    one_line(citylake("--lake", str(copy_of(city, tmp_path / "lake")), "ingest", "pings", pings, env=with_key_file),
             "another user could swap it", "keep the key where only you")
    settings = shared / "citylake.toml"
    settings.write_text('lake = "elsewhere"\n')
    settings.chmod(0o644)
    one_line(citylake("--config", str(settings), "settings"), "another user could swap it", "keep settings where only you")
    shared.chmod(0o1777)  # sticky: others may add entries here, not rename or remove these
    assert citylake("--lake", str(root), "ingest", "pings", pings, env=with_key_file).returncode == 0
    assert citylake("--config", str(settings), "settings").returncode == 0
    if os.geteuid() == 0:
        (tmp_path / "mine").mkdir()
        link = tmp_path / "mine" / "keys"
        link.symlink_to(shared)
        os.lchown(link, NOBODY, NOBODY)
        one_line(citylake("--lake", str(root), "ingest", "pings", pings, env={"CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(link / key.name)}),
                 "is a link nobody made")


def test_a_lake_id_that_is_no_id_is_refused_before_it_names_a_key_file(tmp_path):
    """The lake's id names its key file (~/.config/citylake/keys/<id>.key): a citylake.json whose id is a path (another
    user's planted lake, say) is refused in one line, before any key file is made or read."""
    Lake.init(tmp_path / "lake")
    marker = tmp_path / "lake" / "citylake.json"
    for planted in ("../../../../tmp/planted", "/tmp/known", "0123456789abcdeg"):
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "lake_id": planted}))
        one_line(citylake("--lake", str(tmp_path / "lake"), "init"), "'lake_id' is", "16 hex digits")
        one_line(citylake("--lake", str(tmp_path / "lake"), "tables"), "'lake_id' is", "16 hex digits")


def test_a_key_file_others_can_change_is_refused(city, tmp_path):
    """A key file others can write (swap) is refused in one line with the fix; as root, one another user owns (who would
    know the key) too."""
    key = tmp_path / "steward.key"
    key.write_text(TEST_KEY + "\n")
    key.chmod(0o666)
    settings = {"CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(key)}
    root = copy_of(city, tmp_path / "lake")
    one_line(citylake("--lake", str(root), "ingest", "pings", str(city.root.parent / "city" / "pings.csv"), env=settings),
             "anyone can change it (mode 666)", f"chmod 600 {key}")
    key.chmod(0o600)
    assert citylake("--lake", str(root), "ingest", "pings", str(city.root.parent / "city" / "pings.csv"), env=settings).returncode == 0
    if os.geteuid() == 0:
        os.chown(key, NOBODY, NOBODY)
        one_line(citylake("--lake", str(root), "ingest", "pings", str(city.root.parent / "city" / "pings.csv"), env=settings),
                 "belongs to another user")


@needs_a_user
def test_a_lake_cannot_be_made_in_a_directory_this_user_cannot_write(tmp_path):
    (tmp_path / "locked").mkdir(mode=0o555)
    one_line(citylake("--lake", str(tmp_path / "locked" / "lake"), "init", user=True), "cannot make a lake", "choose a directory")


# -- 3. a file as the lake; 4. a damaged citylake.json ---------------------------------------------------------------------


def test_a_file_as_the_lake_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a lake\n")
    for lake, command in (("notes.txt", "init"), ("notes.txt/lake", "init"), ("notes.txt", "tables")):
        one_line(citylake("--lake", str(tmp_path / lake), command), "not a directory", str(tmp_path / "notes.txt"), "--lake DIR")


@pytest.mark.parametrize("text, why", [
    ('{"cell_res": 11,', "not JSON"),
    ("[11, 5]", "not an object"),
    ('{"cell_res": 11}', "'partition_res' is missing"),
    ('{"cell_res": "11", "partition_res": 5}', "'cell_res' is '11'"),
    ('{"cell_res": 11, "partition_res": 5, "lake_id": 7}', "'lake_id' is 7"),
    ('{"cell_res": 5, "partition_res": 11}', "coarser"),
    ("\udcff\udcfe", "not text"),
])
def test_a_damaged_citylake_json_names_the_file_and_what_to_do(tmp_path, text, why):
    lake = Lake.init(tmp_path / "lake")
    (lake.root / "citylake.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    for command in (["tables"], ["init"], ["sql", "SELECT 1"]):
        one_line(citylake("--lake", str(lake.root), *command), str(lake.root / "citylake.json"), why, "restore it from a backup")


# -- 5. --out is checked before any work -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["query", "footfall", "--out", "/no/dir/x.csv"],
    ["query", "dwell", "--role", "steward", "--out", "/no/dir/x.csv"],
    ["query", "od", "--out", "/no/dir/x.parquet", "--format", "parquet"],
    ["query", "near", "--place", "p", "--out", "/no/dir/x.json"],
    ["query", "profile", "--out", "/no/dir/x.csv"],
    ["query", "footfall", "--format", "parquet"],
    ["map", "places", "--out", "{file}/map.html"],
    ["map", "footfall", "--out", "{file}/map.png"],
    ["report", "--category", "district", "--out", "{file}/reports"],
    ["pilot", "--boundary", "{file}", "--out", "{file}/pilot.html"],
    ["generate-city", "--out", "{file}"],
], ids=lambda c: " ".join(c[:2]))
def test_out_is_checked_before_the_lake_is_even_opened(tmp_path, command):
    (tmp_path / "file.txt").write_text("a file\n")
    args = [part.format(file=tmp_path / "file.txt") for part in command]
    line = one_line(citylake("--lake", str(tmp_path / "no-lake-here"), *args), "--out" if "--out" in args else "--format", code=2)
    assert "no citylake lake" not in line and line.endswith("--help`)")


# -- 6. Ctrl-C in the shell; 8. Ctrl-C in a command ------------------------------------------------------------------------


class Terminal:
    """A program on a pseudo-terminal, as someone at a keyboard runs it (Ctrl-C is the terminal's, to the whole group)."""

    def __init__(self, argv: list[str], env: dict) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)
        self.unread = ""

    def expect(self, text: str, timeout: float = 60) -> str:
        """Everything printed up to and including ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.unread:
            assert time.monotonic() < deadline, f"no {text!r} after {timeout} s; got {self.unread[-500:]!r}"
            if select.select([self.fd], [], [], 0.05)[0]:
                self.unread += os.read(self.fd, 4096).decode(errors="replace")
        seen, self.unread = self.unread.split(text, 1)
        return seen + text

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def exit_code(self) -> int:
        with_timeout = time.monotonic() + 30
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            assert time.monotonic() < with_timeout
            try:
                if select.select([self.fd], [], [], 0.05)[0]:
                    self.unread += os.read(self.fd, 4096).decode(errors="replace")
            except OSError:
                time.sleep(0.05)


LONG_QUERY = "SELECT sum(hash(a.range * b.range)) FROM range(200000) a, range(200000) b;"


def test_ctrl_c_in_the_shell_cancels_the_statement_and_keeps_the_history(city, tmp_path):
    history = tmp_path / "history"
    shell = Terminal([sys.executable, "-m", "citylake.cli", "--lake", str(city.root), "shell", "--history", str(history)],
                     {**os.environ, "HOME": str(tmp_path), "COLUMNS": "100"})
    shell.expect("citylake> ")
    shell.type(LONG_QUERY + "\n")
    time.sleep(1.0)  # running: it would take minutes
    pressed = time.monotonic()
    shell.type("\x03")
    printed = shell.expect("citylake> ")
    assert time.monotonic() - pressed < 1.0
    assert [line for line in printed.replace("^C", "").splitlines() if line.strip()][-2:] == ["cancelled", "citylake> "]
    assert LONG_QUERY in history.read_text()  # saved before it ran
    shell.type("SELECT 41 + 1 AS answer;\n")
    assert "42" in shell.expect("citylake> ")
    shell.type("SELECT 'half a statement")
    shell.type("\x03")  # at the prompt: drops the line
    shell.expect("citylake> ")
    shell.type("\x04")  # Ctrl-D: leaves
    assert shell.exit_code() == 0
    assert "Traceback" not in shell.unread and "interrupted" not in shell.unread
    assert history.read_text().splitlines()[-2:] == [LONG_QUERY, "SELECT 41 + 1 AS answer;"]


def test_ctrl_c_mid_ingest_is_one_line_and_a_rerun_resumes(tmp_path):
    lake = with_key(Lake.init(tmp_path / "lake"))
    pings = make_pings(200_000, seed=8).drop_columns(["h3_cell"])
    pcsv.write_csv(pings.set_column(0, "device_id", pc.cast(pings["device_id"], pa.string())), tmp_path / "pings.csv")
    env = {**os.environ, **STEWARD, "CITYLAKE_INGEST_BATCH_ROWS": "20000", "CITYLAKE_INGEST_BUFFER_MB": "0"}  # a commit per chunk
    command = [sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "ingest", "pings", str(tmp_path / "pings.csv")]
    running = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while lake.stats("pings").version < 2:  # interrupt after a commit or two of ten
        assert running.poll() is None, "the ingest finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    running.send_signal(signal.SIGINT)
    out, err = running.communicate(timeout=30)
    one_line(subprocess.CompletedProcess(command, running.returncode, out, err), "interrupted", "run the command again", code=130)
    kept = lake.rows("pings")
    assert 0 < kept < 200_000
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0 and f"{200_000 - kept:,} accepted" in rerun.stdout, rerun.stderr
    assert lake.rows("pings") == 200_000


# -- 7. Dask shuts down quietly; a bug is one line too ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_report_ends_without_dask_shutdown_noise(city, tmp_path):
    for run in range(3):
        done = citylake("--lake", str(city.root), "report", "--district", "places:district-1-2", "--workers", "2",
                        "--out", str(tmp_path / f"report-{run}.html"), env=STEWARD)
        assert done.returncode == 0, done.stderr
        noise = [line for line in done.stderr.splitlines() if not line.startswith(("dask: ", "report: "))]
        assert noise == [] and "CommClosedError" not in done.stderr and "Traceback" not in done.stderr


def test_an_unexpected_exception_is_one_line_with_its_traceback_in_a_file(tmp_path, monkeypatch, capsys):
    from citylake.cli import main
    from citylake.cli.options import Context

    def broken(self, **kw):
        return 1 / 0

    monkeypatch.setattr(Context, "open", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("CITYLAKE_DEBUG", raising=False)
    assert main(["--lake", str(tmp_path), "tables"]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("citylake: error: unexpected ZeroDivisionError: division by zero — a bug in citylake")
    (report,) = tmp_path.glob("citylake-error-*.txt")
    assert report.name in line and "Traceback" in report.read_text() and "1 / 0" in report.read_text()
