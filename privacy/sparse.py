"""Crowd alerts everyone may read: the sparse vector technique over live counts, with OpenDP's noise.

An alert says whether a count crossed a line, so an exact test tells someone who controls k - 1 devices at a quiet place
whether one more device was there. The sparse vector technique (AboveThreshold; Lyu, Su and Li, "Understanding the
Sparse Vector Technique for Differential Privacy", 2017, algorithm 7 for monotonic queries) answers any number of such
"above the line?" questions for ``epsilon`` in all, as long as at most ``most`` of them say yes: the line gets one noise
draw for the whole run (scale 1/epsilon1), every count its own (scale most/epsilon2), with epsilon1 : epsilon2 = 1 :
most^(2/3). Counts of distinct devices are monotonic (adding a device never lowers one) and change by at most 1 per
device, whatever the number of places and steps it is counted in.

Each day is one run: the ledger is charged before its line is drawn, and the run's state (the line's noise, the yeses so
far, the last step judged) is written before any answer leaves, so a restarted watcher neither redraws the line nor asks
the same question twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from citylake.privacy.errors import BadPolicy
from citylake.privacy.files import write_private
from citylake.privacy.noise import laplace_noise


@dataclass
class SparseVector:
    """One day's run: ``threshold_noise`` is drawn once; ``used`` yeses of ``most``; ``judged`` the last step asked."""
    day: dt.date
    epsilon: float
    most: int
    threshold_noise: int
    used: int = 0
    judged: dt.datetime | None = None

    @classmethod
    def start(cls, day: dt.date, *, epsilon: float, most: int) -> SparseVector:
        check(epsilon, most)
        return cls(day, epsilon, most, int(laplace_noise(np.zeros(1, dtype=np.int64), _scales(epsilon, most)[0])[0]))

    @property
    def spent(self) -> bool:
        return self.used >= self.most

    @property
    def query_scale(self) -> float:
        return _scales(self.epsilon, self.most)[1]

    def margin(self, questions: int) -> int:
        """Devices a count must clear beyond its line so that, over ``questions`` counts sitting at their line, about one
        is answered yes by noise alone (plus two deviations of the line's own noise)."""
        threshold_scale, query_scale = _scales(self.epsilon, self.most)
        return math.ceil(query_scale * math.log(max(questions, 2) / 2) + 2 * math.sqrt(2) * threshold_scale)

    def above(self, counts: np.ndarray, lines: np.ndarray, *, unasked_after_yes: list[set[int]] | None = None) -> np.ndarray:
        """For each count, in order, whether it is above its line (public), noise included; no after ``most`` yeses. A yes
        to question i leaves the questions ``unasked_after_yes[i]`` unasked (no): which questions are asked may depend on
        earlier answers, never on the data itself."""
        answers = np.zeros(len(counts), dtype=bool)
        if self.spent or not len(counts):
            return answers
        noisy = laplace_noise(np.asarray(counts, dtype=np.int64), self.query_scale)  # a draw for a question not asked is unused
        unasked: set[int] = set()
        for i, (count, line) in enumerate(zip(noisy, np.ceil(lines).astype(np.int64))):
            if i in unasked:
                continue
            if count >= line + self.threshold_noise:
                unasked |= unasked_after_yes[i] if unasked_after_yes else set()
                answers[i] = True
                self.used += 1
                if self.spent:
                    break
        return answers

    # -- the run's state, in the steward zone ---------------------------------------------------
    def save(self, path: Path) -> None:
        document = {**dataclasses.asdict(self), "day": self.day.isoformat(), "judged": self.judged.isoformat() if self.judged else None}
        write_private(path, json.dumps(document) + "\n")

    @classmethod
    def load(cls, path: Path) -> SparseVector | None:
        try:
            document = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:  # a state of the wrong shape or with values no run could have: a new run (charged again)
            judged = dt.datetime.fromisoformat(document["judged"]) if document.get("judged") else None
            run = cls(dt.date.fromisoformat(document["day"]), document["epsilon"], document["most"], document["threshold_noise"],
                      document["used"], judged)
            check(run.epsilon, run.most)
            if not (isinstance(run.threshold_noise, int) and isinstance(run.used, int) and 0 <= run.used <= run.most
                    and run.epsilon > 0 and (judged is None or judged.tzinfo is not None)):
                return None
            return run
        except (AttributeError, KeyError, TypeError, ValueError, BadPolicy):
            return None


def check(epsilon: float, most: int) -> None:
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and (epsilon == 0 or 0.01 <= epsilon <= 10)):
        raise BadPolicy("alert_epsilon", epsilon, "give live crowd alerts an epsilon per day of 0 (none for analysts) or from "
                        "0.01 to 10")
    if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= 100:
        raise BadPolicy("alert_most", most, "give the crowd alerts a day may raise for analysts from 1 to 100")


def _scales(epsilon: float, most: int) -> tuple[float, float]:
    """(the line's noise scale, each count's noise scale) for a run of ``epsilon`` with at most ``most`` yeses."""
    share = most ** (2 / 3)
    threshold_epsilon = epsilon / (1 + share)
    return 1 / threshold_epsilon, most / (epsilon - threshold_epsilon)
