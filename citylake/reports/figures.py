"""A report's figures as PNG bytes (matplotlib, Agg: no display, no network), drawn from what the report computed."""

from __future__ import annotations

import datetime as dt
import io

import polars as pl

from citylake.analytics.report import Report
from citylake.lake import Lake
from citylake.viz import footfall_view, png_bytes


def figures(lake: Lake, report: Report, /) -> dict[str, bytes]:
    """Title → PNG of each figure of ``report``."""
    return {"Footfall by hour": footfall_by_hour(report.hourly, report.name, tz=report.timezone),
            "Map of footfall": png_bytes(footfall_view(lake, report.cells, freq="1d"), size_in=(6, 6), dpi=90)}


def footfall_by_hour(people: pl.DataFrame, name: str, *, tz: str = "UTC") -> bytes:
    """Distinct devices per hour as one filled step shape, on the city's clock (``tz``); withheld hours show as gaps at zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import date2num

    fig, ax = plt.subplots(figsize=(8, 2.8), dpi=100)
    if people.height:  # one filled step per hour, as one shape (a bar per hour took half a second to add and draw)
        hours = pl.datetime_range(people["bucket"].min(), people["bucket"].max() + dt.timedelta(hours=1), "1h", eager=True)
        devices = hours[:-1].to_frame("bucket").join(people.select("bucket", "devices"), on="bucket", how="left")["devices"]
        clock = hours.dt.convert_time_zone(tz).dt.replace_time_zone(None).to_numpy()
        ax.stairs(devices.fill_null(0).to_numpy(), date2num(clock), fill=True, color="#e34a33")
        ax.xaxis_date()
    ax.set_title(f"Distinct devices per hour — {name}", fontsize=10)
    ax.set_ylabel("devices")
    ax.set_xlabel(f"time ({tz})")
    fig.autofmt_xdate()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
