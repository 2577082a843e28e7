"""The lake's privacy policy, kept by the steward in the steward zone (``<lake>/steward/privacy.json``, mode 0600), not
in anyone's settings: the k floor, the privacy budget per day, what a release bounds, and the key's check values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field

from citylake.lake import Lake
from citylake.lake.lake import ZONES
from citylake.privacy.errors import BadPolicy, Refused
from citylake.privacy.sparse import check as check_alerts

POLICY_FILE = "privacy.json"
STEWARD_ZONE = ZONES["steward"].directory
DEFAULT_K = 10  # groups of fewer than 10 distinct devices are never shown, and a release shows no noisy count under 10
DEFAULT_EPSILON_PER_DAY = 1.0
DEFAULT_DELTA_PER_DAY = 1e-6


@dataclass(frozen=True)
class Policy:
    k_floor: int = DEFAULT_K
    epsilon_per_day: float = DEFAULT_EPSILON_PER_DAY  # the most all releases covering one day may spend together
    delta_per_day: float = DEFAULT_DELTA_PER_DAY
    release_cell_res: int = 8  # ~0.7 km² cells: a finer release drowns in its own noise
    max_place_hours: int = 48  # (place, hour) pairs one device may add to a day's footfall release, at most: each day's bound
    # is chosen below it from that day's data, privately (bound_share), as commuters need ~30 and park visitors ~5 (dp_release)
    bound_share: float = 0.1  # of the footfall release's epsilon, spent choosing the day's bound (a DP 95th percentile); 0: fixed
    max_cell_hours: int = 25  # (cell, hour) pairs one device may add to a day's cell release: its likeliest cell each hour, so
    # at most 24; 25 is a square, so its L2 bound (5) is whole and the many cell-hours get the fast discrete noise
    max_trips: int = 6  # trips one device may add to a day's flows release
    threshold_sigmas: float = 3.0  # a release shows a noisy count only from this many noise deviations up (and the k floor):
    # an empty partition's noise passes it 0.13% of the time (Gaussian; 2 deviations let 2.3% through, most rows of a sparse release)
    alert_epsilon: float = 0.3  # of each day's budget, kept for the crowd alerts everyone but the steward reads (live, the
    # sparse vector technique: privacy.sparse); releases spend the rest by default
    alert_most: int = 2  # crowd alerts a day may raise for them: each one costs as much as the whole run of "no"s
    epochs: tuple[dict, ...] = field(default=())  # {"epoch", "check", "since"}: the key's check value per epoch
    pending: str | None = None  # a rotation's new check value until it is finished

    @property
    def release_epsilon(self) -> float:
        """What a release of one day spends by default: the day's budget less what the live crowd alerts keep."""
        return self.epsilon_per_day - self.alert_epsilon

    @property
    def epoch(self) -> int:
        return self.epochs[-1]["epoch"] if self.epochs else 0

    @property
    def current_check(self) -> str | None:
        return self.epochs[-1]["check"] if self.epochs else None

    def with_epoch(self, check: str) -> Policy:
        since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return dataclasses.replace(self, epochs=(*self.epochs, {"epoch": self.epoch + 1, "check": check, "since": since}), pending=None)

    def with_pending(self, check: str) -> Policy:
        return dataclasses.replace(self, pending=check)

    def changed(self, **values) -> Policy:
        """The policy with some values changed (each checked)."""
        updated = dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})
        return updated.checked()

    def checked(self) -> Policy:
        if self.k_floor < 2:
            raise BadPolicy("k_floor", self.k_floor, "k-anonymity below 2 shows single devices; use 2 or more")
        if not 0 < self.epsilon_per_day <= 10:
            raise BadPolicy("epsilon_per_day", self.epsilon_per_day, "give a budget above 0 and at most 10 per day")
        if not 0 <= self.delta_per_day < 1e-3:
            raise BadPolicy("delta_per_day", self.delta_per_day, "delta must be below 1e-3 (far below 1 / devices)")
        if self.threshold_sigmas < 0:
            raise BadPolicy("threshold_sigmas", self.threshold_sigmas, "give a number of noise deviations of 0 or more")
        if not 0 <= self.bound_share < 1:
            raise BadPolicy("bound_share", self.bound_share, "give a share of the release's epsilon from 0 (a fixed bound) to below 1")
        check_alerts(self.alert_epsilon, self.alert_most)
        if self.alert_epsilon >= self.epsilon_per_day:
            raise BadPolicy("alert_epsilon", self.alert_epsilon, f"keep the live crowd alerts' epsilon below the day's budget "
                            f"({self.epsilon_per_day:g}), so that releases have some (`citylake privacy set --alert-epsilon`)")
        for name in ("max_place_hours", "max_cell_hours", "max_trips"):
            if getattr(self, name) < 1:
                raise BadPolicy(name, getattr(self, name), "a contribution bound is at least 1")
        return self


def read_policy(lake: Lake, /, *, doing: str = "this") -> Policy | None:
    """The lake's policy, or None for a lake not given one yet; refuses whoever cannot read the steward zone."""
    try:
        text = lake.read_steward_file(POLICY_FILE)
    except PermissionError:
        raise Refused(f"{doing} is for the steward: the lake's steward zone ({STEWARD_ZONE}/) is readable by its "
                      "owner only") from None
    if text is None:
        return None
    document = json.loads(text)
    known = {f.name for f in dataclasses.fields(Policy)}
    values = {k: v for k, v in document.items() if k in known}
    values["epochs"] = tuple(values.get("epochs", ()))
    if "alert_epsilon" not in values:  # a policy from before live crowd alerts had a share: keep the releases most of it
        share = min(Policy.alert_epsilon, round(0.3 * float(values.get("epsilon_per_day", DEFAULT_EPSILON_PER_DAY)), 6))
        values["alert_epsilon"] = share if share >= 0.01 else 0.0
    return Policy(**values).checked()


def write_policy(lake: Lake, policy: Policy, /) -> None:
    """Replace the policy file atomically, readable by its owner only."""
    lake.write_steward_file(POLICY_FILE, json.dumps(dataclasses.asdict(policy.checked()), indent=2) + "\n")
