"""A table's commits as people read them: version, time, operation and the metrics worth a glance."""

from __future__ import annotations

import datetime as dt
from typing import Any

# Delta commit metrics worth a glance, by the names delta-rs gives them.
COMMIT_METRICS = ("num_added_files", "num_removed_files", "num_added_rows", "num_target_rows_inserted",
                  "num_target_rows_updated", "num_target_rows_deleted", "numFilesAdded", "numFilesRemoved",
                  "numDeletedFiles", "numFilesDeleted")
# What citylake's own writers add to a commit (see ingestion.batch)
CITYLAKE_FIELDS = ("citylake.rows", "citylake.batch_id", "citylake.inserted", "citylake.duplicates")


def commit_summary(commit: dict[str, Any]) -> dict[str, Any]:
    """One commit of ``Lake.history`` as version, time (UTC, ISO), operation and ``details`` (k=v, …)."""
    metrics = commit.get("operationMetrics") or {}
    details = {k: metrics[k] for k in COMMIT_METRICS if k in metrics}
    params = commit.get("operationParameters") or {}
    if "mode" in params:
        details["mode"] = params["mode"]
    for key in CITYLAKE_FIELDS:
        if key in commit:
            details[key.removeprefix("citylake.")] = commit[key]
    return {
        "version": commit.get("version"),
        "time": dt.datetime.fromtimestamp(commit["timestamp"] / 1000, dt.timezone.utc).isoformat(timespec="seconds"),
        "operation": commit.get("operation"),
        "details": ", ".join(f"{k}={v}" for k, v in details.items()),
    }
