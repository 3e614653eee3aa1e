"""Geohash against published values, round trips, neighbours, and the MQTT topic layout."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware import geohash
from firmware.geohash import (
    decode,
    encode,
    neighbours,
    parse_sighting_topic,
    region_filter,
    sighting_topic,
    status_topic,
)

DEV = "3f9a1c0e5b7d2468"


@pytest.mark.parametrize(
    ("lat", "lon", "precision", "expected"),
    [
        (57.64911, 10.40744, 11, "u4pruydqqvj"),  # Wikipedia's example
        (42.6, -5.6, 5, "ezs42"),
        (-25.382708, -49.265506, 7, "6gkzwgj"),
        (0.0, 0.0, 1, "s"),
        (-90.0, -180.0, 3, "000"),
        (90.0, 180.0, 3, "zzz"),
    ],
)
def test_encode_known_values(lat: float, lon: float, precision: int, expected: str) -> None:
    assert encode(lat, lon, precision) == expected


def test_decode_known_value() -> None:
    lat, lon, lat_err, lon_err = decode("ezs42")
    assert lat == pytest.approx(42.605, abs=1e-3)
    assert lon == pytest.approx(-5.603, abs=1e-3)
    assert lat_err == pytest.approx(180 / 2**13)  # 12 lat bits + the half
    assert lon_err == pytest.approx(360 / 2**14)


@given(
    st.floats(-90, 90, allow_nan=False),
    st.floats(-180, 180, allow_nan=False),
    st.integers(1, geohash.MAX_PRECISION),
)
def test_round_trip_cell_contains_point(lat: float, lon: float, precision: int) -> None:
    h = encode(lat, lon, precision)
    c_lat, c_lon, lat_err, lon_err = decode(h)
    assert abs(c_lat - lat) <= lat_err + 1e-12
    assert abs(c_lon - lon) <= lon_err + 1e-12
    assert encode(c_lat, c_lon, precision) == h  # the centre lies in its own cell


def test_neighbours_known() -> None:
    n = neighbours("dqcjq")
    assert n["n"] == "dqcjw"
    assert n["s"] == "dqcjn"
    assert n["e"] == "dqcjr"
    assert n["w"] == "dqcjm"
    assert set(n) == {"n", "ne", "e", "se", "s", "sw", "w", "nw"}


@given(st.floats(-85, 85, allow_nan=False), st.floats(-180, 180, allow_nan=False), st.integers(1, 9))
def test_neighbours_are_adjacent(lat: float, lon: float, precision: int) -> None:
    h = encode(lat, lon, precision)
    c_lat, c_lon, lat_err, lon_err = decode(h)
    for name, cell in neighbours(h).items():
        assert len(cell) == precision and cell != h
        n_lat, n_lon, _, _ = decode(cell)
        d_lat = round((n_lat - c_lat) / (2 * lat_err))
        d_lon = (n_lon - c_lon) / (2 * lon_err)
        cells_round = 360 / (2 * lon_err)
        d_lon = round(d_lon) % round(cells_round)
        d_lon = d_lon - round(cells_round) if d_lon > 1 else d_lon
        assert (d_lat, d_lon) == geohash._DIRECTIONS[name]


def test_neighbours_wrap_antimeridian_and_stop_at_poles() -> None:
    east_edge = encode(0.1, 179.99, 4)
    assert decode(neighbours(east_edge)["e"])[1] < -179  # wraps to the west edge
    top = encode(89.99, 0.0, 3)
    n = neighbours(top)
    assert "n" not in n and "ne" not in n and "nw" not in n
    assert {"e", "w", "s"} <= set(n)


def test_topic_layout() -> None:
    topic = sighting_topic("sousveil/v1", 57.64911, 10.40744, DEV)
    assert topic == f"sousveil/v1/sightings/u/u4/u4p/u4pr/u4pru/{DEV}"
    assert sighting_topic("sousveil/v1", 57.64911, 10.40744, DEV, precision=2) == f"sousveil/v1/sightings/u/u4/{DEV}"
    assert parse_sighting_topic("sousveil/v1", topic) == ("u4pru", DEV)
    assert region_filter("sousveil/v1", "u4p") == "sousveil/v1/sightings/u/u4/u4p/#"
    assert status_topic("sousveil/v1", "3f9a1c0e5b7d2468") == "sousveil/v1/status/3f9a1c0e5b7d2468"


def _matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic matching (OASIS MQTT 3.1.1, 4.7), enough for + and #."""
    f, t = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


@given(st.floats(-90, 90, allow_nan=False), st.floats(-180, 180, allow_nan=False), st.integers(1, 5))
def test_a_region_filter_takes_exactly_its_cell(lat: float, lon: float, precision: int) -> None:
    topic = sighting_topic("sousveil/v1", lat, lon, DEV)
    cell = encode(lat, lon, precision)
    assert _matches(region_filter("sousveil/v1", cell), topic)
    for other in neighbours(cell).values():
        assert not _matches(region_filter("sousveil/v1", other), topic)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: encode(91, 0, 5), "lat"),
        (lambda: encode(0, -180.5, 5), "lon"),
        (lambda: encode(float("nan"), 0, 5), "lat"),
        (lambda: encode(0, 0, 0), "precision"),
        (lambda: encode(0, 0, 13), "precision"),
        (lambda: encode(0, 0, True), "precision"),
        (lambda: encode("1", 0, 5), "lat"),
        (lambda: decode(""), "geohash"),
        (lambda: decode("u4a"), "alphabet"),
        (lambda: decode("u4pruydqqvjxx"), "geohash"),
        (lambda: neighbours("ail"), "alphabet"),
        (lambda: sighting_topic("sousveil/#", 0, 0, DEV), "wildcards"),
        (lambda: sighting_topic("/sousveil", 0, 0, DEV), "start or end"),
        (lambda: sighting_topic("", 0, 0, DEV), "non-empty"),
        (lambda: status_topic("sousveil/v1", "a/b"), "device id"),
        (lambda: status_topic("sousveil/v1", ""), "device id"),
        (lambda: status_topic("sousveil/v1", "+"), "device id"),
        (lambda: sighting_topic("sousveil/v1", 0, 0, "a/b"), "device id"),
        (lambda: parse_sighting_topic("sousveil/v1", "other/v1/sightings/u/u4/" + DEV), "not under"),
        (lambda: parse_sighting_topic("sousveil/v1", "sousveil/v1/sightings/" + DEV), "no region"),
        (lambda: parse_sighting_topic("sousveil/v1", "sousveil/v1/sightings/u/x4/" + DEV), "prefixes of one geohash"),
        (lambda: parse_sighting_topic("sousveil/v1", "sousveil/v1/sightings/u/ua/" + DEV), "alphabet"),
        (lambda: parse_sighting_topic("sousveil/v1", "sousveil/v1/sightings/u/u4/a+b"), "device id"),
    ],
)
def test_bad_input_is_a_clear_value_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
