"""Preloaded into the local cluster's workers (``cluster._local_cluster``): a task that fails is reported by the command
that ran it, in one line; the worker's own log of the failure, a traceback, would reach the terminal beside it (the
workers share the command's stderr). `citylake worker` on other machines keeps Dask's logs for their operators."""

from __future__ import annotations

import logging

logging.getLogger("distributed.worker").setLevel(logging.CRITICAL + 1)
