"""Bearing rays from boxes, and where the rays of one track cross: the camera's own position.

A detection's box gives a horizontal angle in the camera (pinhole model); the rider's
heading and the camera's mounting yaw turn it into a bearing from true north. Each frame of
a track gives one ray (rider position + bearing + angular sigma); the rays of a track are
intersected by weighted least squares in a local east/north plane::

    cam = CameraModel(hfov_deg=66.0, yaw_deg=0.0, width_px=1920)
    b = cam.bearing_of((950.0, 100.0, 970.0, 120.0), rider_heading_deg=90.0)  # ~90.0 (east)
    ray = BearingRay(t_ns, lat, lon, acc_m, b.bearing_deg, b.sigma_deg)
    est = intersect_rays(rays)  # CameraFix, or None when the baseline is too short

``BearingRay`` maps one to one onto ``firmware.sighting.Ray`` (``to_sighting_ray``, with the
frame's UTC time); ``CameraFix`` onto ``firmware.sighting.Estimate`` (``to_estimate``).
``intersect_rays`` also accepts ``sighting.Ray`` objects directly. See docs/tracker.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from firmware.position.interpolate import EARTH_RADIUS_M
from firmware.sighting import Estimate, Ray

# equirectangular (to_local/from_local) is good to mm over the ~100 m of one track
MIN_RANGE_M = 2.0  # ranges below this are clamped when weighting (a ray's lateral error is range * sigma)


Box = tuple[float, float, float, float]
FloatArray = npt.NDArray[np.float64]


class RayLike(Protocol):
    """Anything with an observer position, its accuracy and a bearing: ``BearingRay`` or ``sighting.Ray``."""

    @property
    def lat_deg(self) -> float: ...
    @property
    def lon_deg(self) -> float: ...
    @property
    def acc_m(self) -> float: ...
    @property
    def bearing_deg(self) -> float: ...
    @property
    def sigma_deg(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Bearing:
    """A direction clockwise from true north (0 <= bearing_deg < 360) and its one-sigma uncertainty."""

    bearing_deg: float
    sigma_deg: float


@dataclass(frozen=True, slots=True)
class BearingRay:
    """One ray: where the rider was at ``t_ns`` (WGS84, accuracy in metres) and the bearing to the camera.

    Maps field for field onto ``firmware.sighting.Ray`` (whose time is a UTC datetime).
    """

    t_ns: int
    lat_deg: float
    lon_deg: float
    acc_m: float
    bearing_deg: float
    sigma_deg: float

    def to_sighting_ray(self, t_utc: datetime) -> Ray:
        return Ray(t_utc, self.lat_deg, self.lon_deg, self.acc_m, self.bearing_deg, self.sigma_deg)


@dataclass(frozen=True, slots=True)
class CameraFix:
    """Where the rays cross: the camera's position, its one-sigma radius, and how good the geometry was.

    ``baseline_m`` is the spread of the observers across the mean ray, ``spread_deg`` the spread
    of the bearings, ``range_m`` the distance from the mean observer. Maps onto
    ``firmware.sighting.Estimate`` (lat_deg, lon_deg, sigma_m).
    """

    lat_deg: float
    lon_deg: float
    sigma_m: float
    n_rays: int
    baseline_m: float
    spread_deg: float
    range_m: float

    def to_estimate(self) -> Estimate:
        return Estimate(self.lat_deg, self.lon_deg, self.sigma_m)


@dataclass(frozen=True, slots=True)
class CameraModel:
    """A pinhole camera: horizontal field of view, mounting yaw (clockwise from the bike's heading), width.

    ``bearing_of`` takes a box in pixels of a frame ``width_px`` wide; ``for_width`` gives the
    same camera at another capture width. ``pixel_sigma_px`` is the uncertainty of a box centre
    (detector jitter), ``box_sigma_frac`` adds a share of the box width (a big box's centre is
    less sure), ``heading_sigma_deg`` is the default heading uncertainty (GPS course).
    """

    hfov_deg: float
    yaw_deg: float
    width_px: int
    pixel_sigma_px: float = 1.5
    box_sigma_frac: float = 0.1
    heading_sigma_deg: float = 3.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.hfov_deg < 179.0:
            raise ValueError(f"hfov_deg must be within 1..179, got {self.hfov_deg!r}")
        if not -180.0 <= self.yaw_deg <= 360.0:
            raise ValueError(f"yaw_deg must be within -180..360, got {self.yaw_deg!r}")
        if self.width_px < 1:
            raise ValueError(f"width_px must be at least 1, got {self.width_px!r}")
        for name in ("pixel_sigma_px", "box_sigma_frac", "heading_sigma_deg"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    @property
    def focal_px(self) -> float:
        """Focal length in pixels: half the width over tan(hfov / 2)."""
        return (self.width_px / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)

    def for_width(self, width_px: int) -> CameraModel:
        """The same camera seen at another capture width (same field of view)."""
        return CameraModel(
            self.hfov_deg, self.yaw_deg, width_px, self.pixel_sigma_px, self.box_sigma_frac, self.heading_sigma_deg
        )

    def angle_of_x(self, x_px: float) -> float:
        """Horizontal angle of column ``x_px`` from the optical axis, degrees, positive to the right."""
        return math.degrees(math.atan((x_px - self.width_px / 2.0) / self.focal_px))

    def bearing_of(self, box: Box, rider_heading_deg: float, heading_sigma_deg: float | None = None) -> Bearing:
        """The bearing from the rider to the centre of ``box`` (pixels), and its one-sigma in degrees.

        sigma = sqrt(heading_sigma^2 + pixel_sigma^2), the pixel part being the centre's
        uncertainty (``pixel_sigma_px`` + ``box_sigma_frac`` * width) through d(atan(u/f))/du.
        """
        x1, _, x2, _ = box
        u = (x1 + x2) / 2.0 - self.width_px / 2.0
        f = self.focal_px
        angle = math.degrees(math.atan(u / f))
        centre_sigma_px = math.hypot(self.pixel_sigma_px, self.box_sigma_frac * abs(x2 - x1))
        pixel_sigma_deg = math.degrees(f * centre_sigma_px / (f * f + u * u))
        h_sigma = self.heading_sigma_deg if heading_sigma_deg is None else heading_sigma_deg
        return Bearing(
            bearing_deg=(rider_heading_deg + self.yaw_deg + angle) % 360.0,
            sigma_deg=math.hypot(h_sigma, pixel_sigma_deg),
        )


@dataclass(frozen=True, slots=True)
class IntersectionLimits:
    """When a set of rays gives no estimate: see ``intersect_rays``."""

    min_rays: int = 2
    min_baseline_m: float = 2.0
    min_spread_deg: float = 3.0
    max_range_m: float = 60.0
    max_sigma_m: float = 30.0
    max_behind_frac: float = 0.2


def to_local(lat_deg: float, lon_deg: float, lat0_deg: float, lon0_deg: float) -> tuple[float, float]:
    """(east, north) in metres of a point from an origin, equirectangular."""
    east = math.radians(lon_deg - lon0_deg) * math.cos(math.radians(lat0_deg)) * EARTH_RADIUS_M
    north = math.radians(lat_deg - lat0_deg) * EARTH_RADIUS_M
    return east, north


def from_local(east_m: float, north_m: float, lat0_deg: float, lon0_deg: float) -> tuple[float, float]:
    """(lat, lon) of a point ``east_m``/``north_m`` metres from an origin; inverse of ``to_local``."""
    lat = lat0_deg + math.degrees(north_m / EARTH_RADIUS_M)
    lon = lon0_deg + math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat0_deg))))
    return lat, lon


def intersect_rays(
    rays: Sequence[RayLike],
    limits: IntersectionLimits = IntersectionLimits(),
    iterations: int = 3,
    gauss_newton: int = 10,
) -> CameraFix | None:
    """The weighted least-squares crossing of ``rays``, or None when the geometry cannot place the camera.

    Each ray is a line through its observer; the fix minimises the sum of squared
    perpendicular distances weighted by 1/(range * sigma)^2 (a ray's lateral error grows
    with the distance to the camera), re-weighted ``iterations`` times with the ranges of the
    previous fix. That linear fix starts up to ``gauss_newton`` Gauss-Newton steps on the
    bearing residuals themselves: the maximum-likelihood fix for Gaussian bearing errors (the
    linear one is pulled towards the observers when bearings are noisy: 5 m at 5 deg in the
    simulated pass). The covariance ((J^T W J)^-1, scaled by the residual chi^2 per degree of
    freedom when that is above 1) gives the geometric part of ``sigma_m``; the mean GPS accuracy is
    added in quadrature, because GPS error is mostly a common offset over the seconds of one
    pass and does not average out.

    None when: fewer than ``min_rays``; the observers spread less than ``min_baseline_m``
    across the mean ray; the bearings spread less than ``min_spread_deg``; the crossing lies
    behind more than ``max_behind_frac`` of the observers; it is further than ``max_range_m``
    from the mean observer; or ``sigma_m`` exceeds ``max_sigma_m``.
    """
    if len(rays) < max(2, limits.min_rays):
        return None
    lat0 = sum(r.lat_deg for r in rays) / len(rays)
    lon0 = sum(r.lon_deg for r in rays) / len(rays)
    pts = np.array([to_local(r.lat_deg, r.lon_deg, lat0, lon0) for r in rays], dtype=np.float64)
    b = np.radians(np.array([r.bearing_deg for r in rays], dtype=np.float64))
    dirs = np.stack([np.sin(b), np.cos(b)], axis=1)  # (east, north) unit vectors
    sigma = np.radians(np.maximum(np.array([r.sigma_deg for r in rays], dtype=np.float64), 0.1))
    acc = np.array([r.acc_m for r in rays], dtype=np.float64)

    mean_dir = dirs.sum(axis=0)
    norm = float(np.hypot(*mean_dir))
    mean_dir = mean_dir / norm if norm > 1e-9 else np.array([0.0, 1.0])
    mean_normal = np.array([mean_dir[1], -mean_dir[0]])
    across = pts @ mean_normal
    baseline = float(across.max() - across.min()) if norm > 1e-9 else 0.0  # rays that cancel out: no geometry
    rel = np.degrees(np.arctan2(dirs @ mean_normal, dirs @ mean_dir))  # bearing relative to the mean, signed
    spread = float(rel.max() - rel.min())
    if baseline < limits.min_baseline_m or spread < limits.min_spread_deg:
        return None
    solved = _solve(pts, b, sigma, iterations, gauss_newton)
    if solved is None:
        return None
    fix, cov, chi2 = solved
    ranges = ((fix[None, :] - pts) * dirs).sum(axis=1)  # signed distance along each ray
    behind = float(np.mean(ranges <= 0.0))
    range_m = float(np.hypot(*fix))  # origin is the mean observer
    dof = len(rays) - 2
    chi2_per_dof = chi2 / dof if dof > 0 and gauss_newton > 0 else 1.0
    geo_var = float(np.trace(cov)) * max(1.0, chi2_per_dof)
    sigma_m = math.sqrt(geo_var + float(np.mean(acc)) ** 2)
    if behind > limits.max_behind_frac or range_m > limits.max_range_m or sigma_m > limits.max_sigma_m:
        return None
    lat, lon = from_local(float(fix[0]), float(fix[1]), lat0, lon0)
    return CameraFix(lat, lon, sigma_m, len(rays), baseline, spread, range_m)


def _solve(
    pts: FloatArray, b: FloatArray, sigma: FloatArray, iterations: int, gauss_newton: int
) -> tuple[FloatArray, FloatArray, float] | None:
    """(fix, covariance, chi^2) in the local plane; None when the normal equations are singular."""
    dirs = np.stack([np.sin(b), np.cos(b)], axis=1)
    normals = np.stack([np.cos(b), -np.sin(b)], axis=1)
    ranges = np.full(len(b), 10.0)
    fix = np.zeros(2)
    cov = np.zeros((2, 2))
    for _ in range(max(1, iterations)):
        w = 1.0 / (np.maximum(ranges, MIN_RANGE_M) * sigma) ** 2
        nn = normals[:, :, None] * normals[:, None, :]  # (n, 2, 2) outer products
        a = (w[:, None, None] * nn).sum(axis=0)
        rhs = (w[:, None, None] * nn @ pts[:, :, None]).sum(axis=0)[:, 0]
        if np.linalg.cond(a) > 1e8:
            return None
        cov = np.linalg.inv(a)
        fix = cov @ rhs
        ranges = ((fix[None, :] - pts) * dirs).sum(axis=1)  # signed distance along each ray

    # Gauss-Newton on the bearing residuals themselves (the maximum-likelihood fix): the linear
    # solution above is pulled towards the observers when the bearings are noisy.
    chi2 = 0.0
    for _ in range(gauss_newton):
        delta = fix[None, :] - pts
        r2 = np.maximum((delta**2).sum(axis=1), MIN_RANGE_M**2)
        resid = (np.arctan2(delta[:, 0], delta[:, 1]) - b + math.pi) % (2 * math.pi) - math.pi
        jac = np.stack([delta[:, 1] / r2, -delta[:, 0] / r2], axis=1)
        w = 1.0 / sigma**2
        jtj = (jac * w[:, None]).T @ jac
        if np.linalg.cond(jtj) > 1e10:
            return None
        cov = np.linalg.inv(jtj)
        step = cov @ ((jac * w[:, None]).T @ -resid)
        fix = fix + step
        if float(np.hypot(*step)) < 1e-3:
            break
    if gauss_newton > 0:
        delta = fix[None, :] - pts
        resid = (np.arctan2(delta[:, 0], delta[:, 1]) - b + math.pi) % (2 * math.pi) - math.pi
        chi2 = float((resid**2 / sigma**2).sum())
    return fix, cov, chi2
