"""Where the analysis runs: a local Dask cluster by default, or any cluster at ``tcp://HOST:PORT``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from citylake.h3_index import CitylakeError


class ClusterError(CitylakeError):
    """A Dask scheduler that cannot be reached or started."""


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, *, workers: int = 2, memory_limit: str | None = None,
                announce=print) -> Iterator[object]:
    """A ``distributed.Client``: connected to ``scheduler`` if given, else a local cluster of ``workers``
    processes (one thread each, ``memory_limit`` per worker). Announces the dashboard address."""
    from distributed import Client

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as err:
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} ({err}); start one with `dask scheduler` "
                               "or leave --scheduler out for a local cluster") from None
        cluster = None
    else:
        cluster, security = _local_cluster(workers, memory_limit)
        client = Client(cluster, security=security)
    announce(f"dask: {len(client.scheduler_info()['workers'])} workers; dashboard at {client.dashboard_link}")
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# One core per worker: the engines inside a task (Polars, Arrow, h3ronpy's Rayon pool) size their thread pools when
# first imported, so these must be in the environment before a worker process starts, not set inside it afterwards.
# Dask's statistical profiler samples each task thread every 10 ms and needs the GIL each time; a batch job does not
# read its flame graphs, and on two cores it cost the two-worker run a few per cent (the task stream still shows).
# Each process's event loop also wakes every 20 ms to time itself, and the nanny and worker check memory every 100 ms
# and system load every 500 ms: when every core runs a task, each wake-up takes a core from one. Slower ticks only
# coarsen those diagnostics (a 10M-ping analysis on 2 workers: 3.5-4.2 s -> 3.2-3.5 s in turns with the defaults);
# memory is still checked twice a second, and a task holds at most TASK_PINGS pings, far below a worker's limit.
QUIET_WORKERS = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
                 "distributed.admin.system-monitor.interval": "5s", "distributed.worker.memory.monitor-interval": "500ms"}
PRELOAD = ["citylake.analytics.detect"]  # imported as each worker starts, so the first task does not pay for the imports
ONE_CORE = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1", "CITYLAKE_THREADS": "1",
            "NUMBA_NUM_THREADS": "1"}
# A worker runs one task after another, each allocating and freeing the same few hundred MB. Polars' allocator hands
# freed pages back to the system after 0.5 s and glibc's (NumPy's) after each large free, so every task faulted its
# memory in again, page by page (this VM has no transparent huge pages), and two workers zeroing pages share one memory
# bus. Freed memory now stays with the worker for 10 s (Polars) or up to 256 MB (glibc): a task's page faults fall
# by about two thirds. Peak memory is unchanged; an idle worker hands Polars' pages back after 10 s and keeps
# at most 256 MB of glibc's.
KEEP_FREED_MEMORY = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:10000,muzzy_decay_ms:10000",
                     "MALLOC_MMAP_THRESHOLD_": str(64 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20)}
WORKER_ENVIRON = {**ONE_CORE, **KEEP_FREED_MEMORY}


def _local_cluster(workers: int, memory_limit: str | None):
    """Worker processes of one thread and one core each, so that a second worker adds a core, not contention; and the
    TLS credentials, made for this cluster alone, that its scheduler, nannies and workers require of every peer. Without
    them any local user could connect to 127.0.0.1 and run code as the steward (who holds the key, reads raw pings)."""
    import dask
    from distributed import LocalCluster
    from distributed.security import Security

    security = Security.temporary()  # a fresh CA and certificate, in memory only; handed to the workers as they spawn
    saved = {name: os.environ.get(name) for name in WORKER_ENVIRON}
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENVIRON, **QUIET_WORKERS}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit or "auto",
                                   dashboard_address="127.0.0.1:0", preload=PRELOAD, protocol="tls://", security=security)
            return cluster, security
    finally:  # the Nanny sets them in this process to hand them on; this process keeps its own
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
