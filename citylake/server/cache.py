"""Answers of the release endpoints, kept until the tables under them change.

A planner's map calls repeat (the same district, the same day), and building one — reading the Delta log, filtering,
writing JSON — costs 10–30 ms of the server's one Python core. An answer is kept under its endpoint, its parameters,
its format and, for a pilot, its area, and stamped with the modification times of the tables' ``_delta_log``
directories (a commit adds a file there, which changes the directory's time), so a new release or alert is never
answered from before it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable

from starlette.responses import Response

from citylake.lake import Lake

WATCHED = ("places", "footfall_hourly", "footfall_cells_hourly", "od_daily", "alerts_released")


class AnswerCache:
    def __init__(self, lake: Lake, /, *, size: int = 512) -> None:
        self.lake, self.size = lake, size
        self._answers: OrderedDict[tuple, tuple[tuple, Response]] = OrderedDict()
        self._lock = threading.Lock()

    def answer(self, key: tuple, build: Callable[[], Response], /) -> Response:
        stamp = self._stamp()
        with self._lock:
            kept = self._answers.get(key)
            if kept and kept[0] == stamp:
                self._answers.move_to_end(key)
                return _copy(kept[1])
        built = build()
        if built.status_code == 200:
            with self._lock:
                self._answers[key] = (stamp, built)
                while len(self._answers) > self.size:
                    self._answers.popitem(last=False)
        return built

    def _stamp(self) -> tuple:
        times = []
        for name in (*WATCHED, "citylake.json"):
            path = self.lake.root / name if name.endswith(".json") else self.lake.path(name) / "_delta_log"
            try:
                times.append(os.stat(path).st_mtime_ns)
            except FileNotFoundError:
                times.append(0)
        return tuple(times)


def _copy(response: Response) -> Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length",)}
    return Response(response.body, status_code=response.status_code, headers=headers, media_type=response.media_type)
