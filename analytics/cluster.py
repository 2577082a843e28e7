"""Where the analysis runs: a local Dask cluster by default, or any cluster at ``tcp://HOST:PORT``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from h3_index import CitylakeError


class ClusterError(CitylakeError):
    """A Dask scheduler that cannot be reached or started."""


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, *, workers: int = 2, memory_limit: str | None = None,
                announce=print) -> Iterator[object]:
    """A ``distributed.Client``: connected to ``scheduler`` if given, else a local cluster of ``workers``
    processes (one thread each, ``memory_limit`` per worker). Announces the dashboard address."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as err:
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} ({err}); start one with `dask scheduler` "
                               "or leave --scheduler out for a local cluster") from None
        cluster = None
    else:
        # one core per worker: the engines inside a task stay on their worker's core, so workers add cores, not contention
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit or "auto",
                               dashboard_address="127.0.0.1:0", env={"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1"})
        client = Client(cluster)
    announce(f"dask: {len(client.scheduler_info()['workers'])} workers; dashboard at {client.dashboard_link}")
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
