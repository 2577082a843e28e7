"""Run by the crash tests in a child process: append generated pings to a lake.

usage: python writer_process.py LAKE ROWS SEED BATCHES
Prints "writing" before each write so the parent knows when to strike.
"""

from __future__ import annotations

import sys

from conftest import make_pings

from citylake.lake import Lake

if __name__ == "__main__":
    root, rows, seed, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    lake = Lake.open(root)
    for batch in range(batches):
        data = make_pings(rows, seed=seed * 1000 + batch)
        print("writing", flush=True)
        lake.write("pings", data, mode="append")
        print("committed", flush=True)
