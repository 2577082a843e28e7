"""Where the analysis runs: a local Dask cluster by default (TLS with credentials made for the run), or any cluster at
``tls://HOST:PORT`` (the cluster's CA and a certificate of ours: ``tls_security``; plain ``tcp://`` is refused);
``run_worker`` is `citylake worker`."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator

from citylake.h3_index import CitylakeError


class ClusterError(CitylakeError):
    """A Dask scheduler that cannot be reached or started."""


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, *, workers: int = 2, memory_limit: str | None = None, security=None,
                announce=print) -> Iterator[object]:
    """A ``distributed.Client``: connected to ``scheduler`` if given (a ``tls://`` one with ``security``, see
    ``tls_security``), else a local cluster of ``workers`` processes (one thread each, ``memory_limit`` per worker).
    Announces the dashboard address."""
    from distributed import Client

    if scheduler:
        _check_address(scheduler, security)
        try:
            client = Client(scheduler, timeout="10s", security=security)
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
        _close_quietly(client, cluster, interrupted=isinstance(sys.exc_info()[1], KeyboardInterrupt))


def tls_security(ca_file: str, cert: str, key: str):
    """Dask's security settings for a ``tls://`` cluster: its CA (to check the scheduler and workers) and our own
    certificate and key (which the cluster's peers check in turn); None when none is given."""
    from distributed.security import Security

    given = [name for name, value in (("analysis.tls_ca_file", ca_file), ("analysis.tls_cert", cert), ("analysis.tls_key", key))
             if value]
    if not given:
        return None
    if len(given) < 3:
        raise ClusterError("a tls:// cluster needs all three of analysis.tls_ca_file, analysis.tls_cert and analysis.tls_key "
                           f"(given: {', '.join(given)})")
    for path in (ca_file, cert, key):
        if not os.path.isfile(path):
            raise ClusterError(f"no such file {path}: the TLS settings name the cluster's CA, this machine's certificate and its key")
    return Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key, tls_worker_cert=cert, tls_worker_key=key,
                    require_encryption=True)


def refuse_plain_tcp(scheduler: str) -> None:
    """Only a TLS cluster: a plain-TCP one lets whoever reaches it run code on its workers, which read the steward's pings
    (and get the pseudonym and storage keys with an ingest's tasks), or return what a release then publishes."""
    if scheduler.lower().startswith("tcp://"):
        raise ClusterError(f"{scheduler} is a plain-TCP Dask cluster: whoever reaches it can run code on workers that read the "
                           "steward's data; use a tls://HOST:PORT cluster (dask scheduler --protocol tls …) with analysis.tls_ca_file, "
                           "analysis.tls_cert and analysis.tls_key")


def _check_address(scheduler: str, security) -> None:
    refuse_plain_tcp(scheduler)
    if scheduler.startswith("tls://") and security is None:
        raise ClusterError(f"{scheduler} is a TLS cluster: set analysis.tls_ca_file, analysis.tls_cert and analysis.tls_key "
                           "(the cluster's CA, and a certificate and key it trusts)")
    if not scheduler.startswith("tls://"):
        raise ClusterError(f"{scheduler!r} is not a Dask scheduler address; give tls://HOST:PORT")


def run_worker(scheduler: str, *, security=None, memory_limit: str | None = None, name: str | None = None,
               announce=print) -> None:
    """One worker process for a cluster, tuned as the local cluster's are (one thread and one core, quiet diagnostics,
    citylake imported at start), under a nanny that restarts it; runs until the scheduler goes or Ctrl-C. Tasks bring
    the lake's URI and storage settings, so the machine needs only to reach the lake (an s3:// one: the store)."""
    import asyncio

    import dask
    from distributed import Nanny

    _check_address(scheduler, security)

    async def serve() -> None:
        async with Nanny(scheduler, nthreads=1, memory_limit=memory_limit or "auto", name=name, preload=PRELOAD,
                         security=security, env=WORKER_ENVIRON, config=QUIET_WORKERS) as nanny:
            announce(f"dask worker {nanny.worker_address} for {scheduler}: one thread, one core; Ctrl-C stops it")
            await nanny.finished()

    with dask.config.set(QUIET_WORKERS):
        try:
            asyncio.run(serve())
        except OSError as err:
            raise ClusterError(f"cannot join the Dask scheduler at {scheduler} ({err}); is it running, and reachable from here?") from None


# What shutting a cluster down logs is not news: a heartbeat or a worker's stream meets a comm already closed
# (CommClosedError, StreamClosedError), a worker is told to go, asyncio finds a cancelled task. These loggers are quiet
# while the client and the cluster close; the results were in hand before.
SHUTDOWN_LOGGERS = ("distributed", "tornado", "asyncio")


def _close_quietly(client, cluster, *, interrupted: bool = False) -> None:
    """The client first (it stops asking the scheduler anything), then our own cluster; our workers are quieted too.
    A failure of the shutdown itself is dropped: the work it followed is done, or failed with its own error. After Ctrl-C
    the shutdown is hurried (the user is waiting for the prompt)."""
    loggers = [logging.getLogger(name) for name in SHUTDOWN_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    timeout = 2 if interrupted else 10
    try:
        if cluster is not None and not interrupted:
            with contextlib.suppress(Exception):
                client.run(_quiet_shutdown_logs)
        with contextlib.suppress(Exception):
            client.close(timeout=timeout)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=timeout)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _quiet_shutdown_logs() -> None:
    """Run in each of our local workers before the cluster closes (they would log the scheduler going away)."""
    for name in SHUTDOWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


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
QUIET_TASK_ERRORS = "citylake.analytics.quiet_worker"  # local workers: a failed task is the command's one line, not a log
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


@contextlib.contextmanager
def _ctrl_c_not_inherited() -> Iterator[None]:
    """Ctrl-C goes to every process of the terminal's foreground group: local workers would die of it while this process
    still needs them to shut down in order (and the nannies would start new ones). A blocked signal stays blocked across
    exec, so SIGINT is blocked in this thread while the cluster starts: the thread the cluster spawns its workers from,
    made now, and the workers inherit the block; this process still takes Ctrl-C on its other threads."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
        with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENVIRON, **QUIET_WORKERS}), _ctrl_c_not_inherited():
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit or "auto",
                                   dashboard_address="127.0.0.1:0", preload=[*PRELOAD, QUIET_TASK_ERRORS], protocol="tls://",
                                   security=security)
            return cluster, security
    finally:  # the Nanny sets them in this process to hand them on; this process keeps its own
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
