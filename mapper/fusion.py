"""Fusion: group sightings into camera entities and place each camera from all its bearing rays.

Each pending sighting (oldest first) is offered to the entities within ``gate_m`` of where it
places the camera (the device's estimate, else its own rays, else the rider). It joins the one
its rays point at best (:func:`pass_chi2`: each pass's shared heading error and GPS offset
fitted away, what is left held to the ray-to-ray jitter; the device's estimate, when there is
one, within 3 sigma); when none fits it starts an entity of its own. Every entity touched is
then re-fitted from all the rays of all its sightings:

- **Position**: weighted least squares on the perpendicular distances of the camera from
  every ray, in a local east/north plane. A ray's lateral uncertainty is
  ``(range * sigma_deg)^2 + acc_m^2``: a bearing error grows with distance, a GPS error does
  not. Re-weighted with the ranges of the previous solution; rays more than ``reject_z``
  sigmas off (or pointing away from the fix) are outliers and left out, a few rounds; then
  Gauss-Newton on the bearing residuals themselves (the maximum-likelihood fix: least squares
  on distances is pulled towards the riders when bearings are noisy).
  Too few rays, or rays that do not cross (one pass in a straight line, parallel bearings):
  the devices' own estimates are averaged (``method="estimates"``); with neither, a point a
  nominal range along the rays marks the entity (``method="observer"``, kept out of the OSM
  file by default).
- **Uncertainty** ``sigma_m``: the fit's covariance (scaled up by chi^2/dof when the rays
  disagree) plus the mean GPS accuracy over the square root of the independent passes, in
  quadrature: within one pass GPS error is a common offset, across passes it averages out.
- **Class**: a vote weighted by each sighting's score.
- **Confidence**: grows with independent devices and, more slowly, with passes: each device
  d contributes ``c_d = min(device_cap, 1 - prod(1 - w_k * score))`` over its passes (``w_k``
  is ``pass_weight`` for its first pass, half that for the others), and
  ``confidence = 1 - prod_d (1 - c_d)``. One device alone never exceeds ``device_cap`` (0.6):
  a camera becomes sure when different riders see it.
- **Stable ids**: a new entity draws a UUID4; it keeps it as sightings join. When two
  entities turn out to be one camera (one fit of both that every pass fits), the older id absorbs the
  younger, and the store keeps the younger as an alias.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from firmware.geometry import from_local, to_local
from firmware.position.interpolate import distance_m
from firmware.sighting import LABELS
from mapper.entity import Entity, Method
from mapper.store import Fused, SightingRow, Store


@dataclass(frozen=True, slots=True)
class FusionConfig:
    """The knobs of fusion; the defaults suit bike passes with 3-5 m GPS and 5-10 degree headings."""

    gate_m: float = 40.0  # entities further than this from a sighting's camera (or rider) are not candidates
    accept_chi2: float = 6.0  # a pass fits an entity (or a merge holds) when its pass_chi2 stays below this
    reject_z: float = 3.0  # rays further off than this many sigmas are outliers
    min_sigma_deg: float = 1.0  # floor on a ray's stated angular sigma
    max_range_m: float = 80.0  # a camera further than this from the riders who saw it is not believed
    nominal_range_m: float = 10.0  # where to mark a camera that rays cannot place
    merge_m: float = 15.0  # entities closer than this are tested for being one camera
    device_cap: float = 0.6  # the most confidence one device alone can give
    pass_weight: float = 0.35  # how much one pass (at score 1) adds within a device
    jitter_deg: float = 4.0  # the part of a ray's sigma that varies ray to ray within a pass (see pass_chi2)


@dataclass(frozen=True, slots=True)
class Fit:
    """A camera placed from rays: position, one-sigma radius, how, and the rays left out."""

    lat_deg: float
    lon_deg: float
    sigma_m: float
    method: Method
    outliers: tuple[tuple[str, int], ...] = ()


class RaySet:
    """The rays of some sightings as arrays in a local east/north plane around ``origin``."""

    __slots__ = ("acc", "b", "keys", "origin", "pid", "pts", "sig")

    def __init__(self, origin: tuple[float, float]) -> None:
        self.origin = origin
        self.pts = np.zeros((0, 2))
        self.b = np.zeros(0)
        self.sig = np.zeros(0)
        self.acc = np.zeros(0)
        self.pid = np.zeros(0, dtype=np.int64)  # which pass (sighting) each ray is from: 0, 1, ...
        self.keys: list[tuple[str, int]] = []

    @classmethod
    def of(
        cls, sightings: Sequence[SightingRow], cfg: FusionConfig, origin: tuple[float, float] | None = None
    ) -> RaySet:
        first = sightings[0].observer
        out = cls(origin or (first[0], first[1]))
        for s in sightings:
            out.add(s, cfg)
        return out

    def _arrays(self, s: SightingRow, cfg: FusionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lat0, lon0 = self.origin
        pts = np.array([to_local(r.lat_deg, r.lon_deg, lat0, lon0) for r in s.rays], dtype=np.float64)
        b = np.radians(np.array([r.bearing_deg for r in s.rays], dtype=np.float64))
        sig = np.radians(np.maximum(np.array([r.sigma_deg for r in s.rays], dtype=np.float64), cfg.min_sigma_deg))
        acc = np.array([r.acc_m for r in s.rays], dtype=np.float64)
        return pts, b, sig, acc

    def add(self, s: SightingRow, cfg: FusionConfig) -> None:
        pts, b, sig, acc = self._arrays(s, cfg)
        self.pts = np.concatenate([self.pts, pts])
        self.b = np.concatenate([self.b, b])
        self.sig = np.concatenate([self.sig, sig])
        self.acc = np.concatenate([self.acc, acc])
        self.pid = np.concatenate([self.pid, np.full(len(b), self.passes, dtype=np.int64)])
        self.keys.extend((s.id, i) for i in range(len(s.rays)))

    @property
    def passes(self) -> int:
        return int(self.pid[-1]) + 1 if len(self.pid) else 0

    def extend(self, other: RaySet, sightings: Sequence[SightingRow], cfg: FusionConfig) -> None:
        if other.origin == self.origin:
            self.pts = np.concatenate([self.pts, other.pts])
            self.b = np.concatenate([self.b, other.b])
            self.sig = np.concatenate([self.sig, other.sig])
            self.acc = np.concatenate([self.acc, other.acc])
            self.pid = np.concatenate([self.pid, other.pid + self.passes])
            self.keys.extend(other.keys)
        else:
            for s in sightings:
                self.add(s, cfg)


@dataclass
class _Working:
    """An entity during one fusion step."""

    id: str
    sightings: list[SightingRow]
    rays: RaySet
    fit: Fit
    first_seen: datetime
    dirty: bool = False
    stale: bool = False  # sightings joined since the last fit (big entities re-fit once per step)


# ---- geometry ----


def _inv2(m: np.ndarray, max_cond: float) -> np.ndarray | None:
    """The inverse of a symmetric 2x2 matrix, or None when its condition number exceeds ``max_cond``
    (closed form: numpy's general routines cost more than the whole fit for a 2x2)."""
    a, b, c = float(m[0, 0]), float(m[0, 1]), float(m[1, 1])
    det = a * c - b * b
    half_tr = (a + c) / 2
    root = math.sqrt(max(half_tr * half_tr - det, 0.0))
    lo, hi = half_tr - root, half_tr + root
    if lo <= 0.0 or hi / lo > max_cond or det <= 0.0:
        return None
    return np.array([[c / det, -b / det], [-b / det, a / det]])


def _solve(
    pts: np.ndarray, b: np.ndarray, sig: np.ndarray, acc: np.ndarray, start: np.ndarray | None, cfg: FusionConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """IRLS on perpendicular distances with outlier rejection: (fix, covariance, z per ray, inlier mask)."""
    n = len(b)
    dirs = np.stack([np.sin(b), np.cos(b)], axis=1)
    normals = np.stack([np.cos(b), -np.sin(b)], axis=1)
    offs = (normals * pts).sum(axis=1)  # each ray: normal . x = offs
    keep = np.ones(n, dtype=bool)
    fix = start
    ranges = np.full(n, cfg.nominal_range_m) if fix is None else ((fix[None, :] - pts) * dirs).sum(axis=1)
    cov = np.eye(2)
    z = np.zeros(n)
    for rounds in range(8):
        var = (np.maximum(ranges, 1.0) * sig) ** 2 + acc**2 + 0.25
        w = np.where(keep, 1.0 / var, 0.0)
        a = (normals.T * w) @ normals
        inv = _inv2(a, 1e8)
        if inv is None:
            return None
        cov = inv
        new = cov @ ((normals.T * w) @ offs)
        moved = fix is None or float(np.hypot(*(new - fix))) > 0.01
        fix = new
        ranges = ((fix[None, :] - pts) * dirs).sum(axis=1)
        var = (np.maximum(ranges, 1.0) * sig) ** 2 + acc**2 + 0.25
        z = ((normals @ fix) - offs) / np.sqrt(var)
        bad = (np.abs(z) > cfg.reject_z) | (ranges < -2.0)
        new_keep = ~bad
        if new_keep.sum() < 2:
            new_keep = keep  # never drop below two rays: keep the last set
        if np.array_equal(new_keep, keep) and not moved and rounds >= 2:
            break
        keep = new_keep
    assert fix is not None
    return fix, cov, z, keep


def _spread_ok(b: np.ndarray, keep: np.ndarray) -> bool:
    """Do the kept rays cross at all: bearings spread by at least 3 degrees (mod 180)."""
    kb = b[keep]
    if len(kb) < 2:
        return False
    d = np.stack([np.cos(2 * kb), np.sin(2 * kb)], axis=1)  # axial mean: 180 degrees apart are parallel
    mean = math.atan2(float(d[:, 1].sum()), float(d[:, 0].sum())) / 2
    rel = (kb - mean + math.pi / 2) % math.pi - math.pi / 2
    return float(rel.max() - rel.min()) >= math.radians(3.0)


def _gauss_newton(
    pts: np.ndarray, b: np.ndarray, sig: np.ndarray, fix: np.ndarray, steps: int = 10
) -> tuple[np.ndarray, np.ndarray, float]:
    """Refine ``fix`` on the bearing residuals themselves (maximum likelihood for Gaussian bearing
    errors; the perpendicular-distance solution is pulled towards the riders when bearings are
    noisy): (fix, covariance, chi^2)."""
    w = 1.0 / sig**2
    cov = np.eye(2)
    for _ in range(steps):
        d = fix[None, :] - pts
        r2 = np.maximum((d**2).sum(axis=1), 1.0)
        resid = (np.arctan2(d[:, 0], d[:, 1]) - b + math.pi) % (2 * math.pi) - math.pi
        jac = np.stack([d[:, 1] / r2, -d[:, 0] / r2], axis=1)
        jtj = (jac * w[:, None]).T @ jac
        inv = _inv2(jtj, 1e10)
        if inv is None:
            break
        cov = inv
        step = -cov @ ((jac * w[:, None]).T @ resid)
        fix = fix + step
        if float(np.hypot(*step)) < 1e-3:
            break
    d = fix[None, :] - pts
    resid = (np.arctan2(d[:, 0], d[:, 1]) - b + math.pi) % (2 * math.pi) - math.pi
    return fix, cov, float((resid**2 * w).sum())


def fit(
    sightings: Sequence[SightingRow],
    cfg: FusionConfig = FusionConfig(),
    start: tuple[float, float] | None = None,
    rays: RaySet | None = None,
) -> Fit:
    """Place one camera from all rays of ``sightings`` (see the module docstring).

    ``rays`` may hold the same rays already converted (RaySet.of(sightings)); ``start`` is a
    first guess (lat, lon), e.g. the previous position of the entity.
    """
    rs = rays if rays is not None else RaySet.of(sightings, cfg)
    lat0, lon0 = rs.origin
    pts, b, sig, acc, keys = rs.pts, rs.b, rs.sig, rs.acc, rs.keys
    start_xy = None if start is None else np.array(to_local(start[0], start[1], lat0, lon0))
    passes = len(sightings)
    gps = float(acc.mean()) if len(acc) else 5.0
    solved = _solve(pts, b, sig, acc, start_xy, cfg) if len(b) >= 2 else None
    if solved is not None:
        fix, cov, _, keep = solved
        mean_obs = pts[keep].mean(axis=0)
        crossing = _spread_ok(b, keep)
        if crossing:
            fix, cov, chi2_sum = _gauss_newton(pts[keep], b[keep], sig[keep], fix)
        if crossing and float(np.hypot(*(fix - mean_obs))) < cfg.max_range_m:
            dof = max(int(keep.sum()) - 2, 1)
            chi2 = chi2_sum / dof
            geo = float(np.trace(cov)) * max(1.0, chi2)
            sigma = math.sqrt(geo + gps**2 / passes)
            lat, lon = from_local(float(fix[0]), float(fix[1]), lat0, lon0)
            outliers = tuple(k for k, kept in zip(keys, keep, strict=True) if not kept)
            return Fit(lat, lon, sigma, "rays", outliers)
    estimates = [s.estimate for s in sightings if s.estimate is not None]
    if estimates:
        w = np.array([1.0 / max(e[2], 0.5) ** 2 for e in estimates])
        lat = float(np.dot(w, [e[0] for e in estimates]) / w.sum())
        lon = float(np.dot(w, [e[1] for e in estimates]) / w.sum())
        sigma = math.sqrt(1.0 / float(w.sum()) + gps**2 / passes)
        return Fit(lat, lon, sigma, "estimates")
    # no geometry: a nominal range along the middle ray of the first sighting
    s = sightings[0]
    r = s.rays[len(s.rays) // 2]
    east = cfg.nominal_range_m * math.sin(math.radians(r.bearing_deg))
    north = cfg.nominal_range_m * math.cos(math.radians(r.bearing_deg))
    lat, lon = from_local(east, north, r.lat_deg, r.lon_deg)
    return Fit(lat, lon, cfg.nominal_range_m, "observer")


SMALL_ENTITY = 5  # entities with more sightings than this are re-fitted once per step, not per sighting


def pass_chi2(x: np.ndarray, x_sigma_m: float, rays: RaySet, jitter_deg: float = 2.0) -> float:
    """How well one pass's rays (``rays`` from index ``first``) point at ``x`` (local metres).

    Within one pass the big errors are shared: one heading error (the course from GPS) and
    one position offset (GPS), plus the uncertainty of ``x`` itself, which looks the same as
    the offset. So the angular residuals are fitted with a common bearing offset and a
    common shift (each with its prior) and what remains is compared with the detector's
    jitter, with the shared errors' prior terms: chi^2 per ray. Rays at a wrong camera leave a
    trend that no common error explains.
    """
    pts, b, sig, acc = rays.pts, rays.b, rays.sig, rays.acc
    d = x[None, :] - pts
    ranges = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1.0)
    resid = (np.arctan2(d[:, 0], d[:, 1]) - b + math.pi) % (2 * math.pi) - math.pi
    normals = np.stack([np.cos(b), -np.sin(b)], axis=1) / ranges[:, None]  # d(angle)/d(shift of the observer)
    pix = math.radians(jitter_deg)
    heading = float(np.sqrt(max(float(np.mean(sig**2)) - pix**2, math.radians(0.5) ** 2)))
    shift = float(np.sqrt(float(np.mean(acc**2)) + x_sigma_m**2 + 1.0))
    a = np.column_stack([np.ones(len(b)), normals])  # resid ~ delta + n.o / range
    prior = np.diag([1.0 / heading**2, 1.0 / shift**2, 1.0 / shift**2])
    lhs = a.T @ a / pix**2 + prior
    theta = np.linalg.solve(lhs, a.T @ resid / pix**2)
    left = resid - a @ theta
    chi2 = float((left**2).sum()) / pix**2 + float(theta @ prior @ theta)
    return chi2 / len(b)


def _join_cost(w: _Working, s: SightingRow, cfg: FusionConfig) -> float | None:
    """How well sighting ``s`` joins entity ``w`` (lower is better); None when it does not."""
    if s.estimate is not None:
        # the device's own fix of this camera must agree with the entity's position
        d = distance_m(s.estimate[0], s.estimate[1], w.fit.lat_deg, w.fit.lon_deg)
        if d > 3.0 * math.hypot(s.estimate[2], w.fit.sigma_m) + 2.0:
            return None
    one = RaySet(w.rays.origin)
    one.add(s, cfg)
    x = np.array(to_local(w.fit.lat_deg, w.fit.lon_deg, *w.rays.origin))
    ahead = ((x[None, :] - one.pts) * np.stack([np.sin(one.b), np.cos(one.b)], axis=1)).sum(axis=1)
    if float(np.mean(ahead > -2.0)) < 0.5:
        return None  # the camera would be behind the rider
    cost = pass_chi2(x, w.fit.sigma_m, one, cfg.jitter_deg)
    return cost if cost <= cfg.accept_chi2 else None


# ---- class, confidence, direction ----


def vote(sightings: Iterable[SightingRow]) -> dict[str, float]:
    """Score-weighted votes per label."""
    votes: dict[str, float] = defaultdict(float)
    for s in sightings:
        votes[s.label] += s.score
    return {k: round(v, 3) for k, v in sorted(votes.items())}


def confidence(sightings: Iterable[SightingRow], cfg: FusionConfig = FusionConfig()) -> float:
    """1 - prod over devices (1 - c_d); c_d = min(cap, 1 - prod over its passes (1 - w * score)),
    where a device's passes after its first count half (w / 2): the same rider again is less
    independent than another rider."""
    miss: dict[str, float] = {}
    for s in sightings:
        w = cfg.pass_weight if s.device not in miss else cfg.pass_weight / 2
        miss[s.device] = miss.get(s.device, 1.0) * (1.0 - w * s.score)
    none = 1.0
    for m in miss.values():
        none *= 1.0 - min(cfg.device_cap, 1.0 - m)
    return round(1.0 - none, 4)


def _direction(sightings: Iterable[SightingRow]) -> float | None:
    angles = [math.radians(s.direction_deg) for s in sightings if s.direction_deg is not None]
    if not angles:
        return None
    deg = math.degrees(math.atan2(sum(math.sin(a) for a in angles), sum(math.cos(a) for a in angles))) % 360.0
    return round(deg, 1) % 360.0


def make_entity(entity_id: str, sightings: Sequence[SightingRow], f: Fit, cfg: FusionConfig = FusionConfig()) -> Entity:
    votes = vote(sightings)
    label = max(LABELS, key=lambda k: (votes.get(k, 0.0), -LABELS.index(k)))
    return Entity(
        id=entity_id,
        lat_deg=round(f.lat_deg, 7),
        lon_deg=round(f.lon_deg, 7),
        sigma_m=round(f.sigma_m, 2),
        label=label,
        votes=votes,
        confidence=confidence(sightings, cfg),
        passes=len(sightings),
        devices=len({s.device for s in sightings}),
        first_seen_utc=min(s.first_seen_utc for s in sightings),
        last_seen_utc=max(s.last_seen_utc for s in sightings),
        method=f.method,
        direction_deg=_direction(sightings),
    )


# ---- the step ----


class Fusion:
    """Fuses the store's pending sightings into entities, one batch per :meth:`step`."""

    def __init__(self, store: Store, cfg: FusionConfig = FusionConfig()) -> None:
        self.store = store
        self.cfg = cfg
        # entities as the last steps left them, with their rays converted: this Fusion is the
        # store's one writer, so they stay true; a step then reloads nothing it has seen, and
        # the cost of a step follows its own sightings, not the size of the map
        self._cache: dict[str, _Working] = {}

    def step(self, limit: int = 5_000) -> int:
        """Fuse up to ``limit`` pending sightings; the number fused (0 when none was pending)."""
        pending = self.store.pending(limit)
        if not pending:
            return 0
        step = _Step(self.store, self.cfg, self._cache)
        try:
            step.run(pending)
        except BaseException:
            self._cache.clear()  # the store did not take the step: forget what it changed
            raise
        for gone in step.merged:
            self._cache.pop(gone, None)
        for w in step.work.values():
            w.dirty = w.stale = False
            self._cache[w.id] = w
        return len(pending)

    def run(self, batch: int = 5_000) -> int:
        """Fuse everything pending; the number fused."""
        total = 0
        while n := self.step(batch):
            total += n
        return total


def _cell(lat: float, lon: float) -> tuple[int, int]:
    """A grid cell of about 111 m on each side (columns scaled by latitude)."""
    scale = max(math.cos(math.radians(lat)), 0.05)
    return math.floor(lat * 1000.0), math.floor(lon * 1000.0 * scale)


class _Step:
    """One batch: the entities it touches live in ``work`` with a grid index over their positions."""

    def __init__(self, store: Store, cfg: FusionConfig, cache: dict[str, _Working] | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.cache = {} if cache is None else cache
        self.work: dict[str, _Working] = {}
        self.grid: dict[tuple[int, int], set[str]] = defaultdict(set)
        self.assign: dict[str, str] = {}
        self.merged: dict[str, str] = {}
        self.loaded: set[tuple[int, int]] = set()

    def _index(self, w: _Working) -> None:
        self.grid[_cell(w.fit.lat_deg, w.fit.lon_deg)].add(w.id)

    def _unindex(self, w: _Working) -> None:
        self.grid[_cell(w.fit.lat_deg, w.fit.lon_deg)].discard(w.id)

    def _load_near(self, lat: float, lon: float) -> None:
        """Bring the stored entities around (lat, lon) into the batch, once per grid cell."""
        c = _cell(lat, lon)
        if c in self.loaded:
            return
        self.loaded.add(c)
        found = [
            e
            for e in self.store.entities_near(lat, lon, 3 * self.cfg.gate_m)
            if e.id not in self.work and e.id not in self.merged  # merged away in this step: not yet deleted
        ]
        for e in [e for e in found if e.id in self.cache]:
            w = self.cache[e.id]
            self.work[e.id] = w
            self._index(w)
        found = [e for e in found if e.id not in self.cache]
        if not found:
            return
        rows = self.store.sightings_of(e.id for e in found)
        for e in found:
            members = rows.get(e.id, [])
            if not members:
                continue
            f = Fit(e.lat_deg, e.lon_deg, e.sigma_m, e.method)
            w = _Working(e.id, list(members), RaySet.of(members, self.cfg), f, e.first_seen_utc)
            self.work[e.id] = w
            self._index(w)

    def _near(self, lat: float, lon: float, radius: float) -> list[_Working]:
        ci, cj = _cell(lat, lon)
        out = []
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                for eid in self.grid.get((ci + di, cj + dj), ()):
                    w = self.work[eid]
                    if distance_m(lat, lon, w.fit.lat_deg, w.fit.lon_deg) <= radius:
                        out.append(w)
        return out

    def _refit(self, w: _Working) -> None:
        self._unindex(w)
        w.fit = fit(w.sightings, self.cfg, (w.fit.lat_deg, w.fit.lon_deg), w.rays)
        w.stale = False
        self._index(w)

    def run(self, pending: Sequence[SightingRow]) -> None:
        cfg = self.cfg
        for s in pending:
            # where to look: the device's own fix when it made one (better than one pass alone can
            # give here: it saw every frame), else ours, else the rider
            rays = RaySet.of([s], cfg) if s.estimate is None else None
            own = fit([s], cfg, rays=rays) if rays is not None else None
            if s.estimate is not None:
                anchor = (s.estimate[0], s.estimate[1])
            elif own is not None and own.method == "rays":
                anchor = (own.lat_deg, own.lon_deg)
            else:
                anchor = (s.observer[0], s.observer[1])
            self._load_near(*anchor)
            best: tuple[float, _Working] | None = None
            for w in self._near(*anchor, cfg.gate_m):
                cost = _join_cost(w, s, cfg)
                if cost is not None and (best is None or cost < best[0]):
                    best = (cost, w)
            if best is None:
                rays = rays if rays is not None else RaySet.of([s], cfg)
                own = own or fit([s], cfg, rays=rays)
                w = _Working(str(uuid.uuid4()), [s], rays, own, s.first_seen_utc, dirty=True)
                self.work[w.id] = w
                self._index(w)
            else:
                w = best[1]
                w.sightings.append(s)
                w.rays.add(s, cfg)
                w.first_seen = min(w.first_seen, s.first_seen_utc)
                w.dirty = True
                if len(w.sightings) <= SMALL_ENTITY or w.fit.method != "rays":
                    self._refit(w)
                else:
                    w.stale = True  # a big entity barely moves: re-fit once at the end of the step
            self.assign[s.id] = w.id
            if not w.stale:
                self._merge_around(w)
        for w in list(self.work.values()):
            if w.id in self.work and w.stale:
                self._refit(w)
                self._merge_around(w)
        changed = [w for w in self.work.values() if w.dirty]
        entities = [make_entity(w.id, w.sightings, w.fit, cfg) for w in changed]
        outliers = {w.id: w.fit.outliers for w in changed}
        self.store.save_fusion(Fused(entities, self.assign, outliers, self.merged))

    def _all_fit(self, f: Fit, sightings: Sequence[SightingRow]) -> bool:
        """Does every pass point at the fitted position (pass_chi2 within the acceptance)?"""
        for s in sightings:
            one = RaySet((f.lat_deg, f.lon_deg))
            one.add(s, self.cfg)
            if pass_chi2(np.zeros(2), f.sigma_m, one, self.cfg.jitter_deg) > self.cfg.accept_chi2:
                return False
        return True

    def _merge_around(self, w: _Working) -> None:
        """Absorb an entity near ``w`` whose rays cross at the same point as ``w``'s."""
        if w.fit.method == "observer":
            return
        for other in self._near(w.fit.lat_deg, w.fit.lon_deg, self.cfg.merge_m):
            if other.id == w.id or other.fit.method == "observer":
                continue
            keep, gone = (w, other) if (w.first_seen, w.id) <= (other.first_seen, other.id) else (other, w)
            rays = RaySet(keep.rays.origin)
            rays.extend(keep.rays, keep.sightings, self.cfg)
            rays.extend(gone.rays, gone.sightings, self.cfg)
            joint = fit([*keep.sightings, *gone.sightings], self.cfg, (keep.fit.lat_deg, keep.fit.lon_deg), rays)
            if joint.method == "observer" or not self._all_fit(joint, [*keep.sightings, *gone.sightings]):
                continue
            gone_ids = {s.id for s in gone.sightings}
            self._unindex(keep)
            self._unindex(gone)
            keep.sightings.extend(gone.sightings)
            keep.rays = rays
            keep.fit = joint
            keep.stale = False
            keep.first_seen = min(keep.first_seen, gone.first_seen)
            keep.dirty = True
            self._index(keep)
            for sid in gone_ids:
                self.assign[sid] = keep.id
            self.merged[gone.id] = keep.id
            for old, new in list(self.merged.items()):
                if new == gone.id:
                    self.merged[old] = keep.id
            del self.work[gone.id]
            return
