"""Long work the server does on request (a pilot's first report, the steward's reports) on a thread of its own: the request
that starts it answers at once, and the client asks again for the result."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from citylake.h3_index.errors import CitylakeError

log = logging.getLogger("citylake.server")


@dataclass
class Job:
    state: str = "running"  # running, done, failed
    message: str = ""


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, key: str, work: Callable[[], str], /) -> Job:
        """Run ``work`` (returns a line saying what it made) unless a job of ``key`` is running; the job either way."""
        with self._lock:
            job = self._jobs.get(key)
            if job and job.state == "running":
                return job
            job = self._jobs[key] = Job()
        threading.Thread(target=self._run, args=(job, work), name=f"job {key}", daemon=True).start()
        return job

    def get(self, key: str, /) -> Job | None:
        return self._jobs.get(key)

    @staticmethod
    def _run(job: Job, work: Callable[[], str]) -> None:
        try:
            job.message = work()
            job.state = "done"
        except CitylakeError as err:
            job.message, job.state = " ".join(str(err).split()), "failed"
        except Exception:
            log.exception("a server job failed")
            job.message, job.state = "the server failed doing this; its log has the details", "failed"
