"""Every message is checked before it may touch the map: its topic, size, strict JSON, the JSON
Schema, what the schema cannot say (the checks of firmware.sighting.from_obj, made on the
parsed message), then sane ranges. :func:`check_message` is the one entry point.

A message that fails is a :class:`Rejected` with a short ``reason`` (counted per reason) and
a ``detail`` for the log; nothing here raises on bad input. Duplicates (a known sighting id)
are the store's business: ``INSERT OR IGNORE`` on the id.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, Final

from fastjsonschema import JsonSchemaValueException

from firmware import geohash
from firmware.position.interpolate import distance_m
from firmware.sighting import (
    MAX_MESSAGE_BYTES,
    Sighting,
    SightingError,
    from_schema_checked,
    no_duplicate_keys,
    parse_checked_utc,
    to_json,
)
from mapper.store import EARTH_M_PER_DEG

log = logging.getLogger(__name__)

EARLIEST_UTC: Final = datetime(2020, 1, 1, tzinfo=UTC)  # nothing was seen before sousveil existed
MAX_FUTURE: Final = timedelta(minutes=10)  # device clocks drift; GPS-disciplined ones do not drift far
MAX_PASS: Final = timedelta(minutes=30)  # one camera passed, not a day of riding
MAX_RAY_SPREAD_M: Final = 500.0  # a pass lasts seconds: rays far apart are not one camera passed
MAX_ESTIMATE_RANGE_M: Final = 300.0  # a camera the device could resolve is near the rider

# the reasons, in the order of the checks (docs/map.md lists them)
REASONS: Final = (
    "topic",  # not a sighting topic (prefix/sightings/<geohash levels>/<device>)
    "oversized",  # more than MAX_MESSAGE_BYTES
    "json",  # not UTF-8 JSON, NaN/Infinity, a key twice
    "schema",  # breaks firmware/sighting.schema.json
    "contract",  # what the schema cannot say (from_json): dates, order of times, crop
    "device",  # the message's device is not its topic's device
    "region",  # the camera is not in the topic's geohash cell
    "time",  # before 2020 or in the future
    "impossible",  # a pass of hours, rays kilometres apart, an estimate far from the rider
    "duplicate",  # a sighting id already stored (counted with its batch by Store.add_checked)
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message was refused: ``reason`` one of REASONS, ``detail`` one line for the log."""

    reason: str
    detail: str


def sighting_schema() -> dict[str, Any]:
    """firmware/sighting.schema.json, shipped as package data."""
    text = resources.files("firmware").joinpath("sighting.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def schema_validator() -> Callable[[Any], Any]:
    """The sighting schema compiled to Python by fastjsonschema (about 0.1 ms a message where
    jsonschema takes 2.5 ms); tests/test_mapper_validate.py holds its verdicts to jsonschema's."""
    import fastjsonschema

    # In draft 2020-12 "format" is an annotation, not an assertion (jsonschema's default too);
    # real calendar dates are checked by the contract (from_obj) instead.
    formats = {"date-time": lambda value: True, "uuid": lambda value: True}
    return fastjsonschema.compile(sighting_schema(), formats=formats)  # type: ignore[no-any-return]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True, slots=True)
class Checked:
    """A message that passed every check, kept as parsed (no dataclass per ray: the store writes
    straight from it); :meth:`sighting` builds the full Sighting when one is wanted."""

    obj: dict[str, Any]
    body: bytes
    first_seen_utc: datetime
    last_seen_utc: datetime

    @classmethod
    def of(cls, s: Sighting) -> Checked:
        """A sighting built here (already held to the contract by its dataclasses) in this form."""
        body = to_json(s)
        return cls(json.loads(body), body, s.first_seen_utc, s.last_seen_utc)

    def sighting(self) -> Sighting:
        return from_schema_checked(self.obj)


def check_message(
    topic: str, payload: bytes, prefix: str = "sousveil/v1", now: datetime | None = None
) -> Checked | Rejected:
    """The message ``payload`` published on ``topic`` if it passes every check, else why not.

    It is not turned into a Sighting (``.sighting()`` does that): the store writes from the
    parsed message, and the subscriber needs no dataclass per ray.
    """
    try:
        cell, topic_device = geohash.parse_sighting_topic(prefix, topic)
    except ValueError as e:
        return Rejected("topic", str(e))
    if len(payload) > MAX_MESSAGE_BYTES:
        return Rejected("oversized", f"{len(payload)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=no_duplicate_keys)
    except (ValueError, RecursionError) as e:
        return Rejected("json", f"not strict UTF-8 JSON: {str(e)[:200]}")
    try:
        schema_validator()(obj)
    except JsonSchemaValueException as e:
        return Rejected("schema", str(e.message)[:200])
    try:
        # what the schema cannot say: real dates, their order, the crop (from_schema_checked's
        # checks, here without building a dataclass per ray)
        first = parse_checked_utc("first_seen_utc", obj["first_seen_utc"])
        last = parse_checked_utc("last_seen_utc", obj["last_seen_utc"])
        ray_times = [parse_checked_utc(f"rays[{i}].t_utc", r["t_utc"]) for i, r in enumerate(obj["rays"])]
        if first > last:
            raise SightingError(
                "last_seen_utc", f"is before first_seen_utc ({obj['last_seen_utc']} < {obj['first_seen_utc']})"
            )
        if "crop" in obj:
            from_schema_checked(obj)  # the crop's own checks (rare: off by default)
    except SightingError as e:
        return Rejected("contract", str(e)[:300])
    return _sane(Checked(obj, payload, first, last), ray_times, cell, topic_device, now or datetime.now(UTC))


def _sane(  # noqa: PLR0911
    c: Checked, ray_times: list[datetime], cell: str, topic_device: str, now: datetime
) -> Checked | Rejected:
    o = c.obj
    if o["device"] != topic_device:
        return Rejected("device", f"message device {o['device']} published under device {topic_device}")
    obs = o["observer"]
    where = o["estimate"] if o["estimate"] is not None else obs
    lat_lo, lat_hi, lon_lo, lon_hi = geohash.bounds(cell)
    if not (lat_lo <= where["lat_deg"] <= lat_hi and lon_lo <= where["lon_deg"] <= lon_hi):
        return Rejected("region", f"camera at {where['lat_deg']:.5f},{where['lon_deg']:.5f} is not in cell {cell}")
    first, last = c.first_seen_utc, c.last_seen_utc
    if first < EARLIEST_UTC or last > now + MAX_FUTURE:
        return Rejected("time", f"seen {first:%Y-%m-%dT%H:%M:%SZ}..{last:%Y-%m-%dT%H:%M:%SZ}")
    if last - first > MAX_PASS:
        return Rejected("impossible", f"a pass of {last - first}")
    lo, hi = first - MAX_PASS, last + MAX_PASS
    olat, olon = obs["lat_deg"], obs["lon_deg"]
    # a box of MAX_RAY_SPREAD_M around the rider (cheap; the exact distance only when outside it)
    dlat = MAX_RAY_SPREAD_M / EARTH_M_PER_DEG / 1.5
    dlon = dlat / max(math.cos(math.radians(olat)), 1e-6)
    for i, (r, t) in enumerate(zip(o["rays"], ray_times, strict=True)):
        if not lo <= t <= hi:
            return Rejected("impossible", f"rays[{i}] at {t:%Y-%m-%dT%H:%M:%SZ} is outside the pass")
        rlat, rlon = r["lat_deg"], r["lon_deg"]
        if (abs(rlat - olat) > dlat or abs(rlon - olon) > dlon) and distance_m(
            olat, olon, rlat, rlon
        ) > MAX_RAY_SPREAD_M:
            return Rejected("impossible", f"rays[{i}] is more than {MAX_RAY_SPREAD_M:g} m from the observer")
    est = o["estimate"]
    if est is not None:
        d = distance_m(olat, olon, est["lat_deg"], est["lon_deg"])
        if not math.isfinite(d) or d > MAX_ESTIMATE_RANGE_M:
            return Rejected("impossible", f"estimate {d:.0f} m from the observer")
    return c


class RejectLog:
    """Logs rejections without letting a flood fill the log (the counting is the caller's).

    The first ``burst`` messages of a reason in each ``window_s`` are logged at WARNING; the
    rest are summarised once the window ends.
    """

    def __init__(self, burst: int = 5, window_s: float = 60.0, clock: Any = time.monotonic) -> None:
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._window: Counter[str] = Counter()
        self._window_start = clock()

    def add(self, rejected: Rejected, topic: str) -> None:
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self.window_s:
                quiet = {k: v - self.burst for k, v in self._window.items() if v > self.burst}
                if quiet:
                    log.warning(
                        "rejected %s more messages in the last %.0f s (not logged one by one)", quiet, self.window_s
                    )
                self._window.clear()
                self._window_start = now
            self._window[rejected.reason] += 1
            if self._window[rejected.reason] <= self.burst:
                log.warning("rejected a message on %s: %s: %s", topic[:120], rejected.reason, rejected.detail)
