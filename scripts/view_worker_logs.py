#!/usr/bin/env python3
"""Show a worker's log lines: the last N, optionally only one run or one level and above.

    scripts/view_worker_logs.py --worker invoice_generator --lines 50
    scripts/view_worker_logs.py --worker invoice_generator --run-id 1a2b3c4d --level ERROR

Reads LOG_DIR (default: logs/ beside manage.py, or as set in .env), rotated files included, so it
needs no database and works when the database is down.
"""

import argparse
import os
import re
import sys
from collections import deque
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
# A record's own prefix, at the start of the line (after the file's timestamp): a run id inside a
# message, or on a traceback's indented lines, is never taken for the line's (D14).
LINE = re.compile(
    r"(?:\S+ )?\[(?P<level>[A-Z]+)\] worker\.(?P<worker>\w+) \| run_id=(?P<run_id>[0-9a-f-]+) \|"
)


def log_dir() -> Path:
    if "LOG_DIR" in os.environ:
        return Path(os.environ["LOG_DIR"])
    env_file = BASE_DIR / ".env"
    if env_file.exists():
        for raw in env_file.read_text().splitlines():
            key, _, value = raw.partition("=")
            if key.strip() == "LOG_DIR" and value.strip():
                return Path(value.strip().strip("'\""))
    return BASE_DIR / "logs"


def log_files(worker: str) -> list[Path]:
    """Oldest first: invoice_generator.log.5 ... .log.1, then .log."""
    base = log_dir() / "workers" / f"{worker}.log"
    rotated = sorted(base.parent.glob(f"{base.name}.*"), key=lambda p: -int(p.suffix[1:] or 0))
    return [p for p in rotated if p.suffix[1:].isdigit()] + ([base] if base.exists() else [])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default="invoice_generator", help="e.g. invoice_finalizer")
    parser.add_argument("--lines", type=int, default=50, help="How many lines to show (the last ones)")
    parser.add_argument("--run-id", help="Only this run's lines (8 hex digits)")
    parser.add_argument("--level", choices=LEVELS, help="Only lines of this level and above")
    args = parser.parse_args(argv)
    if args.lines < 1:
        parser.error("--lines must be at least 1")
    if not re.fullmatch(r"\w+", args.worker):
        parser.error("--worker takes a worker name such as invoice_generator")

    files = log_files(args.worker)
    if not files:
        print(f"no log for worker {args.worker!r} in {log_dir() / 'workers'}", file=sys.stderr)
        return 1
    floor = LEVELS.index(args.level) if args.level else 0
    shown = deque(maxlen=args.lines)
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                match = LINE.match(line)
                if not match:
                    continue
                if args.run_id and match["run_id"] != args.run_id:
                    continue
                if match["level"] in LEVELS and LEVELS.index(match["level"]) < floor:
                    continue
                shown.append(line.rstrip("\n"))
    for line in shown:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
