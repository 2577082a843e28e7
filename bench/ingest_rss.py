"""The child process of figure ingest_memory: ingest one pings CSV and print this process's peak RSS in MB.

    python -m bench.ingest_rss CSV WORK BATCH_ROWS BUFFER_MB

ru_maxrss is inherited across fork, so the child reads its own high-water mark (reset at exec). Only the standard
library is imported at the top, and citylake only what an ingest needs, so the peak is the ingest's, not the bench's.
"""

from __future__ import annotations

import sys
import tempfile


def ingest_peak_rss_mb(csv: str, work: str, batch_rows: int, buffer_mb: int) -> int:
    """Ingest ``csv`` into a fresh lake under ``work`` in batches of ``batch_rows``, gathering up to ``buffer_mb`` of
    checked rows per commit; this process's VmHWM in MB."""
    from citylake.ingestion.location import ingest_pings
    from citylake.lake import Lake

    lake = Lake.init(tempfile.mkdtemp(dir=work) + "/lake")
    ingest_pings(lake, csv, key=b"k", batch_rows=batch_rows, buffer_mb=buffer_mb)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) // 1024


if __name__ == "__main__":
    csv, work, batch_rows, buffer_mb = sys.argv[1:5]
    print(ingest_peak_rss_mb(csv, work, int(batch_rows), int(buffer_mb)))
