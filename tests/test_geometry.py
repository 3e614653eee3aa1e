"""Bearings from boxes and the crossing of rays, against exact geometry."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from firmware.geometry import BearingRay, CameraModel, from_local, intersect_rays, to_local
from firmware.sighting import Ray

LAT0, LON0 = 52.52, 13.405


def box_at(x: float, w: float = 10.0) -> tuple[float, float, float, float]:
    return (x - w / 2, 100.0, x + w / 2, 110.0)


def ray_to(east: float, north: float, target: tuple[float, float], sigma_deg: float = 1.0) -> BearingRay:
    lat, lon = from_local(east, north, LAT0, LON0)
    bearing = math.degrees(math.atan2(target[0] - east, target[1] - north)) % 360.0
    return BearingRay(0, lat, lon, 0.0, bearing, sigma_deg)


def local(fix_lat: float, fix_lon: float) -> tuple[float, float]:
    return to_local(fix_lat, fix_lon, LAT0, LON0)


def test_centre_is_the_heading_plus_yaw() -> None:
    cam = CameraModel(66.0, 0.0, 1920)
    assert cam.bearing_of(box_at(960.0), 37.0).bearing_deg == pytest.approx(37.0)
    side = CameraModel(66.0, 90.0, 1920)  # looking right
    assert side.bearing_of(box_at(960.0), 350.0).bearing_deg == pytest.approx(80.0)


def test_edges_are_half_the_field_of_view() -> None:
    cam = CameraModel(66.0, 0.0, 1920)
    assert cam.bearing_of(box_at(1920.0, 0.0), 0.0).bearing_deg == pytest.approx(33.0)
    assert cam.bearing_of(box_at(0.0, 0.0), 0.0).bearing_deg == pytest.approx(360.0 - 33.0)
    assert cam.angle_of_x(0.0) == pytest.approx(-33.0)
    assert cam.focal_px == pytest.approx(960.0 / math.tan(math.radians(33.0)))
    assert cam.for_width(640).bearing_of(box_at(640.0, 0.0), 0.0).bearing_deg == pytest.approx(33.0)


def test_sigma_grows_with_heading_sigma_and_box_size_and_shrinks_at_the_edge() -> None:
    cam = CameraModel(66.0, 0.0, 1920, heading_sigma_deg=0.0)
    small = cam.bearing_of(box_at(960.0, 6.0), 0.0).sigma_deg
    big = cam.bearing_of(box_at(960.0, 100.0), 0.0).sigma_deg
    edge = cam.bearing_of(box_at(1800.0, 6.0), 0.0).sigma_deg
    assert 0.0 < edge < small < big
    assert cam.bearing_of(box_at(960.0, 6.0), 0.0, heading_sigma_deg=5.0).sigma_deg == pytest.approx(
        math.hypot(5.0, small)
    )


def test_camera_model_is_checked() -> None:
    with pytest.raises(ValueError, match="hfov_deg"):
        CameraModel(0.0, 0.0, 1920)
    with pytest.raises(ValueError, match="width_px"):
        CameraModel(66.0, 0.0, 0)


def test_two_exact_rays_cross_exactly() -> None:
    target = (4.0, 10.0)
    rays = [ray_to(0.0, 0.0, target), ray_to(0.0, 6.0, target)]
    fix = intersect_rays(rays)
    assert fix is not None
    e, n = local(fix.lat_deg, fix.lon_deg)
    assert (e, n) == (pytest.approx(4.0, abs=1e-3), pytest.approx(10.0, abs=1e-3))
    assert fix.n_rays == 2
    assert fix.baseline_m > 2.0
    assert fix.spread_deg > 3.0
    est = fix.to_estimate()
    assert (est.lat_deg, est.lon_deg) == (pytest.approx(fix.lat_deg, abs=1e-7), pytest.approx(fix.lon_deg, abs=1e-7))


def test_many_exact_rays_cross_exactly_and_sigma_reflects_gps_accuracy() -> None:
    target = (-5.0, 20.0)
    rays = [ray_to(0.3 * k, 1.0 * k, target, sigma_deg=2.0) for k in range(10)]
    fix = intersect_rays(rays)
    assert fix is not None
    e, n = local(fix.lat_deg, fix.lon_deg)
    assert math.hypot(e - target[0], n - target[1]) < 1e-3
    assert 0.0 < fix.sigma_m < 3.0
    with_gps = intersect_rays([BearingRay(r.t_ns, r.lat_deg, r.lon_deg, 4.0, r.bearing_deg, 2.0) for r in rays])
    assert with_gps is not None
    assert with_gps.sigma_m >= 4.0


def test_sighting_rays_are_accepted_too() -> None:
    target = (4.0, 10.0)
    t = datetime(2025, 6, 1, tzinfo=UTC)
    rays = [ray_to(0.0, float(k), target).to_sighting_ray(t) for k in range(0, 8, 2)]
    assert all(isinstance(r, Ray) for r in rays)
    fix = intersect_rays(rays)
    assert fix is not None
    e, n = local(fix.lat_deg, fix.lon_deg)
    assert math.hypot(e - 4.0, n - 10.0) < 0.05  # sighting.Ray rounds bearings to 0.1 deg


def test_zero_baseline_gives_none() -> None:
    # one observer, many bearings (a rider standing still)
    rays = [ray_to(0.0, 0.0, (4.0, 10.0 + k)) for k in range(5)]
    assert intersect_rays(rays) is None


def test_near_parallel_rays_give_none() -> None:
    # a camera far ahead on the path: the bearings barely change over 2.5 m
    rays = [ray_to(0.0, float(k), (1.0, 55.0)) for k in range(3)]
    assert intersect_rays(rays) is None
    # the same rays, 1 degree apart, from observers across the path: a baseline but no parallax
    parallel = [BearingRay(0, *from_local(float(k), 0.0, LAT0, LON0), 0.0, 0.5 * k, 1.0) for k in range(3)]
    assert intersect_rays(parallel) is None


def test_rays_pointing_away_give_none() -> None:
    target = (4.0, 10.0)
    rays = [ray_to(0.0, 0.0, target), ray_to(0.0, 6.0, target)]
    away = [BearingRay(r.t_ns, r.lat_deg, r.lon_deg, r.acc_m, (r.bearing_deg + 180.0) % 360.0, 1.0) for r in rays]
    assert intersect_rays(away) is None


def test_too_far_gives_none() -> None:
    target = (40.0, 80.0)
    rays = [ray_to(0.0, 10.0 * k, target) for k in range(4)]
    assert intersect_rays(rays) is None


def test_one_ray_gives_none() -> None:
    assert intersect_rays([ray_to(0.0, 0.0, (4.0, 10.0))]) is None
    assert intersect_rays([]) is None


def test_local_round_trip() -> None:
    lat, lon = from_local(12.0, -7.0, LAT0, LON0)
    e, n = to_local(lat, lon, LAT0, LON0)
    assert (e, n) == (pytest.approx(12.0, abs=1e-6), pytest.approx(-7.0, abs=1e-6))
