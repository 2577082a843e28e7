"""Situational analysis on Dask: baselines, anomalies, sensor faults, Gi* hotspots, detections and reports' contents."""

from __future__ import annotations

if __name__ != "citylake.analytics":  # this folder installs as citylake.analytics; a checkout on sys.path must not make it `analytics`
    raise ImportError(f"import citylake.analytics, not {__name__}: citylake's rooms are subpackages of citylake")

from citylake.analytics.cluster import ClusterError, dask_client  # noqa: E402
from citylake.analytics.detect import HOTSPOT_RES, Analysis, analyse  # noqa: E402

__all__ = ["Analysis", "ClusterError", "HOTSPOT_RES", "analyse", "dask_client"]
