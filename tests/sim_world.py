"""A simulated world for the mapper: cameras on a street grid, rides past them, the sightings the
bikes would publish, and the truth to score the map against.

- Streets: a square grid (``blocks`` x ``blocks``, ``block_m`` apart) around ``origin``.
- Cameras: on poles or walls beside a street, 4-10 m from its centre line, random class.
- Rides: random walks along the streets at 4.5-7 m/s by ``n_devices`` bikes; the forward
  camera (66 degree field of view) sees a camera 4-40 m ahead. Each ride has its own GPS
  error, a slowly wandering offset (3-5 m one-sigma, 30 s correlation: GPS error is a common
  offset over a pass, not white noise) and its own heading error (5-10 degrees, 5 s
  correlation), plus 0.5 degree of detector jitter per ray.
- Missed detections: a whole pass is missed with ``p_miss``; single frames with 30 %.
- False positives: about ``fp_per_km`` spurious sightings per km ridden, a few rays at a
  phantom point (a lamp taken for a camera), low scores.
- Each sighting carries the device's own estimate from firmware.geometry.intersect_rays, as
  the bike computes it, and is a real firmware.sighting.Sighting.

``score(world, entities)`` matches entities to cameras and returns the errors, duplicates,
false entities, and the rider-position-only baseline (the mean rider position of each
camera's sightings, what a map without rays would say).
"""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from firmware.geometry import from_local, intersect_rays, to_local
from firmware.position.interpolate import distance_m
from firmware.sighting import LABELS, ModelRef, Position, Ray, Sighting, suggested_tags
from mapper.entity import Entity

ORIGIN = (55.7047, 13.1910)  # Lund
MODEL = ModelRef("sousveil-cams", "0.1.0", "ab" * 32)
HALF_FOV_DEG = 33.0
FPS = 5.0


@dataclass(frozen=True)
class Camera:
    index: int
    lat_deg: float
    lon_deg: float
    label: str


@dataclass
class World:
    cameras: list[Camera]
    sightings: list[Sighting]
    truth: dict[str, int | None]  # sighting id -> camera index (None: a false positive)
    km_ridden: float = 0.0
    passes: dict[int, int] = field(default_factory=dict)  # camera index -> sightings of it


class _AR1:
    """A first-order Gauss-Markov process: std ``sigma``, correlation time ``tau_s``."""

    def __init__(self, rng: random.Random, sigma: float, tau_s: float) -> None:
        self.rng, self.sigma, self.tau = rng, sigma, tau_s
        self.x = rng.gauss(0.0, sigma)

    def step(self, dt: float) -> float:
        a = math.exp(-dt / self.tau)
        self.x = a * self.x + math.sqrt(1 - a * a) * self.rng.gauss(0.0, self.sigma)
        return self.x


def make_world(
    n_cameras: int = 30,
    n_rides: int = 40,
    n_devices: int = 12,
    seed: int = 0,
    blocks: int = 4,
    block_m: float = 120.0,
    segments_per_ride: int = 14,
    p_miss: float = 0.2,
    fp_per_km: float = 0.5,
    start_utc: datetime = datetime(2026, 5, 1, 7, 0, tzinfo=UTC),
    origin: tuple[float, float] = ORIGIN,
) -> World:
    rng = random.Random(seed)
    cameras: list[Camera] = []
    for i in range(n_cameras):
        horizontal = rng.random() < 0.5
        line = rng.randrange(blocks + 1) * block_m
        along = rng.uniform(10.0, blocks * block_m - 10.0)
        side = rng.choice((-1.0, 1.0)) * rng.uniform(4.0, 10.0)
        east, north = (along, line + side) if horizontal else (line + side, along)
        lat, lon = from_local(east, north, *origin)
        label = rng.choices(LABELS, weights=(4, 3, 1, 2))[0]
        cameras.append(Camera(i, lat, lon, label))
    cam_xy = np.array([to_local(c.lat_deg, c.lon_deg, *origin) for c in cameras])
    devices = [f"{rng.getrandbits(64):016x}" for _ in range(n_devices)]
    sightings: list[Sighting] = []
    truth: dict[str, int | None] = {}
    passes: dict[int, int] = defaultdict(int)
    km = 0.0
    for ride in range(n_rides):
        device = rng.choice(devices)
        t0 = start_utc + timedelta(days=ride // 4, hours=rng.uniform(0, 10))
        route = _route(rng, blocks, block_m, segments_per_ride)
        speed = rng.uniform(4.5, 7.0)
        gps_sigma = rng.uniform(3.0, 5.0)
        gx, gy = _AR1(rng, gps_sigma / math.sqrt(2), 30.0), _AR1(rng, gps_sigma / math.sqrt(2), 30.0)
        heading_err = _AR1(rng, rng.uniform(5.0, 10.0), 5.0)
        heading_sigma = heading_err.sigma
        track = _sample(route, speed)  # (t, x, y, heading_deg)
        km += speed * track[-1][0] / 1000.0
        frames: list[tuple[float, ...]] = []
        for t, x, y, h in track:
            ex, ey, eh = gx.step(1 / FPS), gy.step(1 / FPS), heading_err.step(1 / FPS)
            frames.append((t, x, y, h, x + ex, y + ey, h + eh))
        sightings += _passes(
            rng, frames, cam_xy, cameras, device, t0, gps_sigma, heading_sigma, p_miss, truth, passes, origin
        )
        n_fp = _poisson(rng, fp_per_km * speed * track[-1][0] / 1000.0)
        for _ in range(n_fp):
            s = _false_positive(rng, frames, device, t0, gps_sigma, heading_sigma, origin)
            sightings.append(s)
            truth[s.id] = None
    sightings.sort(key=lambda s: s.first_seen_utc)
    return World(cameras, sightings, truth, km, dict(passes))


def _poisson(rng: random.Random, lam: float) -> int:
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def _route(rng: random.Random, blocks: int, block_m: float, n: int) -> list[tuple[float, float]]:
    i, j = rng.randrange(blocks + 1), rng.randrange(blocks + 1)
    pts = [(i * block_m, j * block_m)]
    prev = None
    for _ in range(n):
        moves = [
            (di, dj) for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)) if 0 <= i + di <= blocks and 0 <= j + dj <= blocks
        ]
        if prev is not None and len(moves) > 1:
            moves = [m for m in moves if m != (-prev[0], -prev[1])]  # no U-turns
        di, dj = rng.choice(moves)
        i, j, prev = i + di, j + dj, (di, dj)
        pts.append((i * block_m, j * block_m))
    return pts


def _sample(route: list[tuple[float, float]], speed: float) -> list[tuple[float, float, float, float]]:
    out = []
    t = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(route):
        length = math.hypot(x1 - x0, y1 - y0)
        heading = math.degrees(math.atan2(x1 - x0, y1 - y0)) % 360.0
        steps = max(1, int(length / speed * FPS))
        for k in range(steps):
            f = k / steps
            out.append((t, x0 + f * (x1 - x0), y0 + f * (y1 - y0), heading))
            t += 1 / FPS
    return out


def _ray(rng: random.Random, t_utc: datetime, frame: tuple[float, ...], target: tuple[float, float],
         gps_sigma: float, heading_sigma: float, origin: tuple[float, float]) -> Ray:  # fmt: skip
    _, x, y, h, mx, my, mh = frame
    true_rel = math.degrees(math.atan2(target[0] - x, target[1] - y)) - h
    bearing = (mh + true_rel + rng.gauss(0.0, 0.5)) % 360.0
    lat, lon = from_local(mx, my, *origin)
    return Ray(t_utc, lat, lon, round(gps_sigma, 1), bearing, round(math.hypot(heading_sigma, 0.5), 1))


def _sighting(rng: random.Random, device: str, rays: list[Ray], best: Ray, label: str, score: float) -> Sighting:
    fix = intersect_rays(rays)
    return Sighting(
        id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        device=device,
        first_seen_utc=rays[0].t_utc,
        last_seen_utc=rays[-1].t_utc,
        label=label,
        score=score,
        frames=len(rays),
        observer=Position(best.lat_deg, best.lon_deg, best.acc_m),
        rays=tuple(rays[:: max(1, math.ceil(len(rays) / 64))]),
        estimate=None if fix is None else fix.to_estimate(),
        tags=suggested_tags(label),
        model=MODEL,
    )


def _passes(
    rng: random.Random,
    frames: list[tuple[float, ...]],
    cam_xy: np.ndarray,
    cameras: list[Camera],
    device: str,
    t0: datetime,
    gps_sigma: float,
    heading_sigma: float,
    p_miss: float,
    truth: dict[str, int | None],
    passes: dict[int, int],
    origin: tuple[float, float],
) -> list[Sighting]:
    xy = np.array([(f[1], f[2]) for f in frames])
    h = np.radians(np.array([f[3] for f in frames]))
    lo, hi = xy.min(axis=0) - 45.0, xy.max(axis=0) + 45.0  # only cameras near this ride can be seen
    near = np.flatnonzero(((cam_xy >= lo) & (cam_xy <= hi)).all(axis=1))
    out = []
    for i in near:
        c, (cx, cy) = cameras[i], cam_xy[i]
        dx, dy = cx - xy[:, 0], cy - xy[:, 1]
        dist = np.hypot(dx, dy)
        rel = (np.degrees(np.arctan2(dx, dy) - h) + 180.0) % 360.0 - 180.0
        visible = (dist >= 4.0) & (dist <= 40.0) & (np.abs(rel) <= HALF_FOV_DEG)
        for run in _runs(visible):
            if rng.random() < p_miss:
                continue
            seen = [k for k in run if rng.random() < 0.7]
            if len(seen) < 3:
                continue
            rays = [
                _ray(rng, t0 + timedelta(seconds=frames[k][0]), frames[k], (cx, cy), gps_sigma, heading_sigma, origin)
                for k in seen
            ]
            best = rays[int(np.argmin(dist[seen]))]
            label = c.label if rng.random() < 0.85 else rng.choice([x for x in LABELS if x != c.label])
            s = _sighting(rng, device, rays, best, label, round(rng.uniform(0.5, 0.95), 3))
            out.append(s)
            truth[s.id] = c.index
            passes[c.index] += 1
    return out


def _runs(mask: np.ndarray) -> list[list[int]]:
    runs: list[list[int]] = []
    cur: list[int] = []
    for k, v in enumerate(mask):
        if v:
            cur.append(k)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def _false_positive(rng: random.Random, frames: list[tuple[float, ...]], device: str, t0: datetime,
                    gps_sigma: float, heading_sigma: float, origin: tuple[float, float]) -> Sighting:  # fmt: skip
    k0 = rng.randrange(max(1, len(frames) - 20))
    _, x, y, h, *_ = frames[k0]
    rng_m, rel = rng.uniform(12.0, 30.0), math.radians(h + rng.uniform(-25.0, 25.0))
    target = (x + rng_m * math.sin(rel), y + rng_m * math.cos(rel))
    ks = range(k0, min(len(frames), k0 + rng.randint(3, 8)))
    rays = [
        _ray(rng, t0 + timedelta(seconds=frames[k][0]), frames[k], target, gps_sigma, heading_sigma, origin) for k in ks
    ]
    return _sighting(rng, device, rays, rays[-1], rng.choice(LABELS), round(rng.uniform(0.3, 0.6), 3))


@dataclass(frozen=True)
class Score:
    cameras_5plus: int  # cameras with five or more sightings
    median_m: float  # position error of the matched entities of those cameras
    p90_m: float
    baseline_median_m: float  # rider-position-only, the same cameras
    baseline_p90_m: float
    duplicates: int  # extra entities for one camera (all cameras)
    false_entities: int  # entities with no camera within the gate
    false_confident: int  # of those, confidence >= 0.5
    found: int  # cameras with an entity
    cameras_seen: int  # cameras with at least one sighting
    label_accuracy: float  # matched cameras whose entity has the true class

    def lines(self) -> list[str]:
        return [
            f"cameras seen {self.cameras_seen}, found {self.found}, with 5+ passes {self.cameras_5plus}",
            f"position error (5+ passes): median {self.median_m:.2f} m, p90 {self.p90_m:.2f} m",
            f"rider-position-only baseline: median {self.baseline_median_m:.2f} m, p90 {self.baseline_p90_m:.2f} m",
            f"duplicates {self.duplicates}, false entities {self.false_entities}"
            f" ({self.false_confident} with confidence >= 0.5), class right {self.label_accuracy:.0%}",
        ]


def score(world: World, entities: Sequence[Entity], gate_m: float = 10.0) -> Score:
    """Match entities to cameras (nearest within ``gate_m``)."""
    by_camera: dict[int, list[tuple[float, Entity]]] = defaultdict(list)
    false = []
    for e in entities:
        d, c = min(
            ((distance_m(e.lat_deg, e.lon_deg, c.lat_deg, c.lon_deg), c) for c in world.cameras), key=lambda x: x[0]
        )
        if d <= gate_m:
            by_camera[c.index].append((d, e))
        else:
            false.append(e)
    obs: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for s in world.sightings:
        ci = world.truth[s.id]
        if ci is not None:
            obs[ci].append((s.observer.lat_deg, s.observer.lon_deg))
    errors, base = [], []
    right = 0
    for c in world.cameras:
        matched = by_camera.get(c.index, [])
        if matched:
            # the entity that holds most of this camera's sightings speaks for it
            _, e = max(matched, key=lambda de: (de[1].passes, -de[0]))
            right += e.label == c.label
            if world.passes.get(c.index, 0) >= 5:
                errors.append(distance_m(e.lat_deg, e.lon_deg, c.lat_deg, c.lon_deg))
        if world.passes.get(c.index, 0) >= 5:
            lat = float(np.mean([p[0] for p in obs[c.index]]))
            lon = float(np.mean([p[1] for p in obs[c.index]]))
            base.append(distance_m(lat, lon, c.lat_deg, c.lon_deg))
    found = sum(1 for c in world.cameras if by_camera.get(c.index))

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q)) if xs else float("nan")

    return Score(
        cameras_5plus=len(base),
        median_m=pct(errors, 50),
        p90_m=pct(errors, 90),
        baseline_median_m=pct(base, 50),
        baseline_p90_m=pct(base, 90),
        duplicates=sum(len(v) - 1 for v in by_camera.values()),
        false_entities=len(false),
        false_confident=sum(1 for e in false if e.confidence >= 0.5),
        found=found,
        cameras_seen=len(world.passes),
        label_accuracy=right / found if found else 0.0,
    )
