"""A camera entity: one physical camera as the map knows it, fused from many riders' sightings.

An entity has a stable id (a UUID4 drawn when it is first seen, kept as sightings arrive
and when two entities turn out to be one: the older id survives). Its position comes from
intersecting the bearing rays of all its sightings (mapper/fusion.py), never from the rider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from firmware.sighting import LABELS, suggested_tags

# how the position was made: all rays intersected; the devices' own estimates averaged
# (rays too few or parallel); or, with one short ray bundle and no estimate, the best guess
# along the rays -- an entity located that way is flagged and kept out of the OSM file
Method = Literal["rays", "estimates", "observer"]
METHODS: Final = ("rays", "estimates", "observer")


@dataclass(frozen=True)
class Entity:
    """One camera. Positions WGS84 degrees; ``sigma_m`` the one-sigma radius of the position.

    ``votes`` is the weighted vote per label (the weights sum of scores; ``label`` is its
    winner); ``confidence`` in 0..1 grows with independent devices and passes
    (mapper/fusion.py says how); ``passes`` counts sightings (one per rider per pass),
    ``devices`` distinct device ids. ``direction_deg`` is where the camera looks, when any
    sighting said so.
    """

    id: str
    lat_deg: float
    lon_deg: float
    sigma_m: float
    label: str
    votes: Mapping[str, float]
    confidence: float
    passes: int
    devices: int
    first_seen_utc: datetime
    last_seen_utc: datetime
    method: Method = "rays"
    direction_deg: float | None = None
    extra_tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"entity {self.id}: label must be one of {', '.join(LABELS)}, got {self.label!r}")
        if self.method not in METHODS:
            raise ValueError(f"entity {self.id}: method must be one of {', '.join(METHODS)}, got {self.method!r}")

    @property
    def check_date(self) -> str:
        """The OSM ``check_date``: the day (UTC) it was last seen, YYYY-MM-DD."""
        return self.last_seen_utc.strftime("%Y-%m-%d")

    def tags(self) -> dict[str, str]:
        """The OpenStreetMap tags suggested for review: class tags, direction, check_date, source=survey."""
        tags = suggested_tags(self.label, self.direction_deg)
        tags.update(self.extra_tags)
        tags["check_date"] = self.check_date
        tags["source"] = "survey"
        return dict(sorted(tags.items()))


@dataclass(frozen=True)
class EntityRay:
    """A bearing ray that went into an entity (for drawing): where the rider was and which way."""

    sighting_id: str
    lat_deg: float
    lon_deg: float
    bearing_deg: float
    sigma_deg: float
    outlier: bool = False
