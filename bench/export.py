"""Export speed and memory: `python -m bench.export [--votes N] [--formats kto,koala]`.

Builds (once, cached under bench/output/ by size) a SQLite store with N votes — threads of one to
three turns, some regenerated answers, one to three votes per answer — then runs the real
`koalabot export` in a subprocess per format and reports rows/s and peak RSS.
Targets: at least 50,000 rows/s and at most 200 MB peak RSS at 1,000,000 votes.

Each format runs ``--repeat`` times (interleaved) and the median run is reported, with the range.
Beside it, a baseline measured in the same run: every message of the store read and written back
as one JSON array per row, on one process, with nothing of the export's work. The ratio of the
two moves far less than either figure when a shared machine speeds up or slows down.

The export may fork worker processes (`--workers`): peak RSS is that of the whole process tree,
sampled from /proc as the sum over every process (pages they share counted in each), and the CPU
time includes the workers'. PSS (shared pages split between the processes) is shown beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from koalabot.prompt.templates import TEMPLATES, Turn, render
from koalabot.store.database import upgrade

OUTPUT = Path(__file__).resolve().parent / "output"
TARGET_ROWS_PER_S = 50_000
TARGET_RSS_MB = 200
#: Bump when the generated data changes shape, so cached databases are rebuilt.
DATA_VERSION = 2

USERS = 5_000
START = datetime(2024, 1, 1, tzinfo=UTC)
QUESTIONS = (
    "How do I reverse a list in Python without copying it?",
    "What is the difference between a koala and a wombat?",
    "Can you summarise the main causes of the French Revolution?",
    "Write a haiku about eucalyptus leaves in the rain.",
    "Why does my SQL query get slower when I add an ORDER BY?",
)
ANSWER = (
    "Here is a short answer to question {n}. First, consider what you are trying to achieve; "
    "then look at the simplest tool that does it. In most cases the standard library already "
    "has what you need, and it is faster than anything you would write by hand."
)


@dataclass
class Counts:
    """What was generated."""

    conversations: int = 0
    messages: int = 0
    votes: int = 0


def _stamp(minutes: int) -> str:
    # The format SQLAlchemy's SQLite DateTime reads and writes.
    return (START + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S.%f")


def _rows(votes: int, seed: int = 7) -> Iterator[tuple[str, tuple[object, ...]]]:
    """(table, row) in insertion order until ``votes`` votes exist; ids are assigned here."""
    rng = random.Random(seed)
    template = TEMPLATES["koala"]
    conv_id = msg_id = made = 0
    minute = 0
    while made < votes:
        conv_id += 1
        minute += 3
        yield (
            "conversations",
            (conv_id, "slack", "T1", f"C{conv_id % 40}", f"{conv_id}.000100", _stamp(minute)),
        )
        turns: list[Turn] = []
        for turn in range(1 + conv_id % 3):
            msg_id += 1
            question_id = msg_id
            question = f"{QUESTIONS[(conv_id + turn) % len(QUESTIONS)]} (#{conv_id}.{turn})"
            author = f"U{rng.randrange(USERS):07d}"
            yield (
                "messages",
                (
                    question_id,
                    conv_id,
                    "user",
                    author,
                    question,
                    f"{minute}.1",
                    "ok",
                    None,
                    _stamp(minute),
                ),
            )
            turns.append(Turn("user", question))
            prompt = render(turns, template)
            answers = 2 if rng.random() < 0.1 else 1
            text = ""
            for _ in range(answers):
                msg_id += 1
                text = ANSWER.format(n=msg_id)
                yield (
                    "messages",
                    (
                        msg_id,
                        conv_id,
                        "assistant",
                        None,
                        text,
                        f"{minute}.2",
                        "ok",
                        question_id,
                        _stamp(minute),
                    ),
                )
                yield (
                    "generations",
                    (
                        msg_id,
                        msg_id,
                        prompt,
                        "koala",
                        "{}",
                        "koala-13b",
                        "eos_token",
                        0,
                        _stamp(minute),
                    ),
                )
                for voter in rng.sample(range(USERS), 1 + msg_id % 3):
                    made += 1
                    rating = 1 if rng.random() < 0.65 else -1
                    yield (
                        "feedback",
                        (msg_id, f"U{voter:07d}", rating, _stamp(minute), _stamp(minute)),
                    )
            turns.append(Turn("assistant", text))


INSERTS = {
    "conversations": "INSERT INTO conversations (id, platform, workspace, channel, thread, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?)",
    "messages": "INSERT INTO messages (id, conversation_id, role, author, text, "
    "platform_message_id, status, parent_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "generations": "INSERT INTO generations (id, message_id, prompt, template, parameters, "
    "model_id, finish_reason, dropped_turns, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "feedback": "INSERT INTO feedback (message_id, user, rating, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?)",
}


def build(path: Path, votes: int) -> Counts:
    """Create the schema with the real migrations, then bulk-insert with sqlite3."""
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    asyncio.run(upgrade(f"sqlite:///{partial}"))
    counts = Counts()
    batches: dict[str, list[tuple[object, ...]]] = {table: [] for table in INSERTS}
    conn = sqlite3.connect(partial)
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        for table, row in _rows(votes):
            batch = batches[table]
            batch.append(row)
            if len(batch) >= 20_000:
                conn.executemany(INSERTS[table], batch)
                batch.clear()
        for table, batch in batches.items():
            conn.executemany(INSERTS[table], batch)
    counts.conversations = conn.execute("SELECT count(*) FROM conversations").fetchone()[0]
    counts.messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    counts.votes = conn.execute("SELECT count(*) FROM feedback").fetchone()[0]
    conn.execute("ANALYZE")
    conn.close()
    partial.rename(path)
    return counts


def database(votes: int) -> Path:
    """The cached database for this size, built if missing."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"export-v{DATA_VERSION}-{votes}.db"
    if path.exists():
        print(f"using cached {path}", file=sys.stderr)
    else:
        print(f"generating {votes:,} votes into {path} ...", file=sys.stderr)
        started = time.perf_counter()
        counts = build(path, votes)
        print(
            f"  {counts.conversations:,} conversations, {counts.messages:,} messages, "
            f"{counts.votes:,} votes in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    return path


class TreeMemory:
    """Peak memory of a process and every process under it, sampled from /proc (Linux) until
    `stop`: the sum of their RSS, and the sum of their PSS.

    RSS comes from /proc/PID/statm, a counter the kernel keeps, every ``interval``. PSS needs
    /proc/PID/smaps_rollup, which walks the process's page tables under its memory lock: about a
    millisecond of CPU per process per read, taken from the export being measured. So PSS is
    sampled ten times less often, which makes its peak a close floor rather than exact.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (call once the process has exited)."""
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        tree = [self.pid]
        samples = 0
        while not self._done.wait(self.interval):
            if samples % 10 == 0:
                tree = _tree(self.pid)
                pss = sum(_rollup(pid).get("Pss", 0) for pid in tree)
                self.peak_pss_kb = max(self.peak_pss_kb, pss)
            samples += 1
            self.peak_rss_kb = max(self.peak_rss_kb, sum(map(_rss_kb, tree)))


def _rss_kb(pid: int) -> int:
    """A process's resident set in KiB (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_KB
    except (OSError, ValueError, IndexError):
        return 0


PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


def _tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    # The fields after the command name (which may hold spaces), ppid second.
                    ppid = int(stat.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _rollup(pid: int) -> dict[str, int]:
    """A process's memory totals in KiB (empty once it has exited)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            lines = rollup.read().splitlines()[1:]
    except OSError:
        return {}
    return {name.rstrip(":"): int(kb) for name, kb, *_ in (line.split() for line in lines)}


@dataclass
class Result:
    """One measured export."""

    format: str
    rows: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    peak_pss_mb: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def rows_per_cpu_s(self) -> float:
        """Rows per second of CPU the export used: what it reaches on an otherwise idle core."""
        return self.rows / self.cpu_seconds if self.cpu_seconds else 0.0

    @property
    def ok(self) -> bool:
        return self.rows_per_s >= TARGET_ROWS_PER_S and self.peak_rss_mb <= TARGET_RSS_MB


#: `koalabot` as installed in this environment (-P: not the source tree of the working directory,
#: which would shadow a compiled install).
KOALABOT = (sys.executable, "-P", "-m", "koalabot")


def build_under_test() -> str:
    """Which koalabot the export runs: compiled with mypyc (``KOALABOT_COMPILE=1``) or plain
    Python, and where it is installed."""
    probe = "import koalabot.export.run as m; print(m.__file__)"
    found = subprocess.run(
        [sys.executable, "-P", "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    where = Path(found).parent
    if found.endswith((".so", ".pyd")):
        return f"koalabot under test: compiled with mypyc ({where})"
    return (
        f"koalabot under test: plain Python ({where}); production builds compile the export "
        "(KOALABOT_COMPILE=1, see the README), a quarter less CPU per row"
    )


def measure(db: Path, fmt: str, out: str, extra: tuple[str, ...] = ()) -> Result:
    """Run `koalabot export` in a child process; wall time, CPU time and peak memory of the
    child and its workers."""
    env = {**os.environ, "KOALABOT_PSEUDONYM_SECRET": "bench-secret"}
    argv = [
        *KOALABOT,
        "export",
        "--format",
        fmt,
        "--out",
        out,
        "--database-url",
        f"sqlite:///{db}",
        *extra,
    ]
    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    memory = TreeMemory(child.pid)
    assert child.stderr is not None
    stderr = child.stderr.read().decode()
    # The child's usage includes that of the workers it waited for (all of them).
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    memory.stop()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"koalabot export --format {fmt} failed:\n{stderr}")
    found = re.search(r"wrote ([\d,]+) ", stderr)
    rows = int(found.group(1).replace(",", "")) if found else 0
    # ru_maxrss (KiB on Linux): the largest single process, a floor for the sampled sum.
    rss_kb = max(memory.peak_rss_kb, usage.ru_maxrss)
    return Result(
        fmt,
        rows,
        seconds,
        usage.ru_utime + usage.ru_stime,
        rss_kb / 1024,
        memory.peak_pss_kb / 1024,
    )


@dataclass
class Baseline:
    """Reading every message and writing it straight back out: the floor under any export."""

    rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def baseline(db: Path) -> Baseline:
    """Every message of ``db`` read (APSW, as the export reads) and written to /dev/null as a
    JSON array per row (orjson), on this process: the CPU-seconds-per-row cost of the data alone.
    """
    import apsw
    import orjson

    started = time.process_time()
    rows = 0
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    with open(os.devnull, "wb") as sink:
        for row in conn.execute("SELECT * FROM messages ORDER BY conversation_id, id"):
            sink.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
            rows += 1
    conn.close()
    return Baseline(rows, time.process_time() - started)


def median_run(runs: list[Result]) -> Result:
    """The run with the median wall time (the lower one of an even count)."""
    ordered = sorted(runs, key=lambda r: r.seconds)
    return ordered[(len(ordered) - 1) // 2]


def table(
    results: list[Result], runs: dict[str, list[Result]] | None = None, base: Baseline | None = None
) -> str:
    """The results as a plain-text table, with the targets (and, given every run of each format
    and the baseline, the range of rows/s and the ratio to the baseline)."""
    lines = [
        f"{'format':<8} {'rows':>10} {'wall s':>7} {'rows/s':>8} {'cpu s':>7} {'rows/cpu-s':>10} "
        f"{'peak RSS':>9} {'peak PSS':>9}  target"
    ]
    for r in results:
        verdict = "ok" if r.ok else "MISSED"
        lines.append(
            f"{r.format:<8} {r.rows:>10,} {r.seconds:>7.1f} {r.rows_per_s:>8,.0f} "
            f"{r.cpu_seconds:>7.1f} {r.rows_per_cpu_s:>10,.0f} {r.peak_rss_mb:>6.0f} MB "
            f"{r.peak_pss_mb:>6.0f} MB  {verdict}"
        )
    if runs:
        for r in results:
            speeds = sorted(run.rows_per_s for run in runs[r.format])
            if len(speeds) > 1:
                lines.append(
                    f"{r.format}: median of {len(speeds)} runs; rows/s from {speeds[0]:,.0f} to "
                    f"{speeds[-1]:,.0f}"
                )
    if base is not None:
        lines.append(
            f"baseline: every message ({base.rows:,}) read and written as JSON on one process: "
            f"{base.rows_per_s:,.0f} rows per CPU-second"
        )
        for r in results:
            if r.rows_per_cpu_s:
                lines.append(
                    f"{r.format}: a row costs {base.rows_per_s / r.rows_per_cpu_s:.1f}x the CPU "
                    "of a baseline row"
                )
    lines.append(
        f"targets: >= {TARGET_ROWS_PER_S:,} rows/s (wall clock), <= {TARGET_RSS_MB} MB peak RSS "
        "(summed over the export's processes)"
    )
    lines.append(build_under_test())
    lines.append(
        f"this machine: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"a 10M-step Python loop takes {calibration():.2f} s"
    )
    return "\n".join(lines)


def calibration() -> float:
    """CPU seconds a 10M-step pure-Python loop takes (from 2M steps), to compare machines."""
    started = time.process_time()
    total = 0
    for i in range(2_000_000):
        total += i
    return 5 * (time.process_time() - started)


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the database, measure each format, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__)
    parser.add_argument("--votes", type=int, default=1_000_000, help="votes in the database")
    parser.add_argument("--formats", default="kto,koala", help="comma-separated export formats")
    parser.add_argument(
        "--keep-output", action="store_true", help="write rows to bench/output/ (default /dev/null)"
    )
    parser.add_argument(
        "--workers", type=int, help="pass --workers N to the export (default: the export's own)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per format; the median is reported (default 3)"
    )
    args = parser.parse_args(argv)
    db = database(args.votes)
    extra = ("--workers", str(args.workers)) if args.workers else ()
    formats = args.formats.split(",")
    runs: dict[str, list[Result]] = {fmt: [] for fmt in formats}
    for attempt in range(max(1, args.repeat)):
        for fmt in formats:
            keep = args.keep_output and attempt == 0
            out = str(OUTPUT / f"export-{args.votes}.{fmt}.jsonl") if keep else os.devnull
            runs[fmt].append(measure(db, fmt, out, extra))
            print(f"  {fmt}: run {attempt + 1} done", file=sys.stderr)
    base = baseline(db)
    results = [median_run(runs[fmt]) for fmt in formats]
    print(table(results, runs, base))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
