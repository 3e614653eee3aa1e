"""Geohash (base-32, Niemeyer) and the MQTT topics built from it.

A sighting is published on a topic that names its region at every geohash precision
from 1 up to the chosen one, one MQTT level per prefix::

    >>> sighting_topic("sousveil/v1", 57.64911, 10.40744, "3f9a1c0e5b7d2468")
    'sousveil/v1/sightings/u/u4/u4p/u4pr/u4pru/3f9a1c0e5b7d2468'

so that a subscriber takes a region with one wildcard subscription at the size it wants,
e.g. ``sousveil/v1/sightings/u/u4/u4p/u4pr/#`` (a cell of about 39 x 20 km). The last level
is the publishing device's id, so that a broker ACL can let each account write under its
own id only (deploy/broker/). See docs/sighting.md for why the levels repeat the prefix
instead of one character each.
"""

from __future__ import annotations

import math

BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(BASE32)}
MAX_PRECISION = 12
DEFAULT_TOPIC_PRECISION = 5  # about 4.9 km x 4.9 km: a district; a city is a few cells at precision 4
MAX_DEVICE_LEN = 64

# neighbour name -> (rows north, columns east)
_DIRECTIONS: dict[str, tuple[int, int]] = {
    "n": (1, 0),
    "ne": (1, 1),
    "e": (0, 1),
    "se": (-1, 1),
    "s": (-1, 0),
    "sw": (-1, -1),
    "w": (0, -1),
    "nw": (1, -1),
}


def _check_lat_lon(lat: float, lon: float) -> tuple[float, float]:
    for name, value, limit in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number of degrees, got {type(value).__name__}")
        if not math.isfinite(value) or not -limit <= value <= limit:
            raise ValueError(f"{name} must be within -{limit:g}..{limit:g} degrees, got {value!r}")
    return float(lat), float(lon)


def _check_precision(precision: int) -> int:
    if isinstance(precision, bool) or not isinstance(precision, int):
        raise ValueError(f"precision must be an int, got {type(precision).__name__}")
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be within 1..{MAX_PRECISION}, got {precision}")
    return precision


def _check_hash(geohash: str) -> str:
    if not isinstance(geohash, str):
        raise ValueError(f"geohash must be a str, got {type(geohash).__name__}")
    if not 1 <= len(geohash) <= MAX_PRECISION:
        raise ValueError(f"geohash must have 1..{MAX_PRECISION} characters, got {len(geohash)}")
    bad = sorted({c for c in geohash if c not in _INDEX})
    if bad:
        raise ValueError(f"geohash {geohash!r} has characters outside the geohash alphabet: {''.join(bad)!r}")
    return geohash


def encode(lat: float, lon: float, precision: int = DEFAULT_TOPIC_PRECISION) -> str:
    """The geohash of (lat, lon) in degrees, ``precision`` characters long (1..12).

    >>> encode(42.6, -5.6, 5)
    'ezs42'
    """
    lat, lon = _check_lat_lon(lat, lon)
    precision = _check_precision(precision)
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    chars: list[str] = []
    bits = 0
    n_bits = 0
    even = True  # bits alternate, longitude first
    while len(chars) < precision:
        if even:
            mid = (lon_lo + lon_hi) / 2
            if lon >= mid:
                bits, lon_lo = (bits << 1) | 1, mid
            else:
                bits, lon_hi = bits << 1, mid
        else:
            mid = (lat_lo + lat_hi) / 2
            if lat >= mid:
                bits, lat_lo = (bits << 1) | 1, mid
            else:
                bits, lat_hi = bits << 1, mid
        even = not even
        n_bits += 1
        if n_bits == 5:
            chars.append(BASE32[bits])
            bits = n_bits = 0
    return "".join(chars)


def bounds(geohash: str) -> tuple[float, float, float, float]:
    """The cell of ``geohash`` as (lat_min, lat_max, lon_min, lon_max) in degrees."""
    _check_hash(geohash)
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    even = True
    for c in geohash:
        value = _INDEX[c]
        for shift in range(4, -1, -1):
            bit = (value >> shift) & 1
            if even:
                mid = (lon_lo + lon_hi) / 2
                lon_lo, lon_hi = (mid, lon_hi) if bit else (lon_lo, mid)
            else:
                mid = (lat_lo + lat_hi) / 2
                lat_lo, lat_hi = (mid, lat_hi) if bit else (lat_lo, mid)
            even = not even
    return lat_lo, lat_hi, lon_lo, lon_hi


def decode(geohash: str) -> tuple[float, float, float, float]:
    """The centre of the cell and its half-sizes: (lat, lon, lat_err, lon_err), all in degrees."""
    lat_lo, lat_hi, lon_lo, lon_hi = bounds(geohash)
    return (lat_lo + lat_hi) / 2, (lon_lo + lon_hi) / 2, (lat_hi - lat_lo) / 2, (lon_hi - lon_lo) / 2


def neighbours(geohash: str) -> dict[str, str]:
    """The adjacent cells of the same precision, keyed n, ne, e, se, s, sw, w, nw.

    Longitude wraps round the antimeridian; at a pole the cells beyond it do not exist and
    their keys are left out.
    """
    lat, lon, lat_err, lon_err = decode(geohash)
    out: dict[str, str] = {}
    for name, (rows, cols) in _DIRECTIONS.items():
        n_lat = lat + rows * 2 * lat_err
        if not -90.0 < n_lat < 90.0:
            continue
        n_lon = lon + cols * 2 * lon_err
        if n_lon >= 180.0:
            n_lon -= 360.0
        elif n_lon < -180.0:
            n_lon += 360.0
        out[name] = encode(n_lat, n_lon, len(geohash))
    return out


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("topic prefix must be a non-empty str, e.g. 'sousveil/v1'")
    if any(c in prefix for c in "+#\x00"):
        raise ValueError(f"topic prefix {prefix!r} must not contain MQTT wildcards (+, #) or NUL")
    if prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        raise ValueError(f"topic prefix {prefix!r} must not start or end with '/' or have empty levels")
    return prefix


def region_levels(geohash: str) -> str:
    """The topic levels of a region: 'u33db' -> 'u/u3/u33/u33d/u33db'."""
    _check_hash(geohash)
    return "/".join(geohash[:i] for i in range(1, len(geohash) + 1))


def sighting_topic(prefix: str, lat: float, lon: float, device: str, precision: int = DEFAULT_TOPIC_PRECISION) -> str:
    """The topic for a sighting at (lat, lon) degrees: ``{prefix}/sightings/u/u3/u33/u33d/u33db/{device}``."""
    _check_prefix(prefix)
    return f"{prefix}/sightings/{region_levels(encode(lat, lon, precision))}/{_check_device(device)}"


def parse_sighting_topic(prefix: str, topic: str) -> tuple[str, str]:
    """(geohash, device) of a sighting topic; ValueError naming the problem when it is not one.

    >>> parse_sighting_topic("sousveil/v1", "sousveil/v1/sightings/u/u4/u4p/3f9a1c0e5b7d2468")
    ('u4p', '3f9a1c0e5b7d2468')
    """
    head = f"{_check_prefix(prefix)}/sightings/"
    if not topic.startswith(head):
        raise ValueError(f"topic {topic[:80]!r} is not under {head!r}")
    levels = topic[len(head) :].split("/")
    if len(levels) < 2:
        raise ValueError(f"topic {topic[:80]!r} has no region and device levels")
    *cells, device = levels
    cell = cells[-1]
    if any(c != cell[: i + 1] for i, c in enumerate(cells)) or len(cell) != len(cells):
        raise ValueError(f"topic {topic[:80]!r}: region levels must be the prefixes of one geohash, e.g. u/u3/u33")
    try:
        return _check_hash(cell), _check_device(device)
    except ValueError as e:
        raise ValueError(f"topic {topic[:80]!r}: {e}") from None


def region_filter(prefix: str, geohash: str) -> str:
    """The subscription that takes every sighting in the cell ``geohash`` (any precision)."""
    _check_prefix(prefix)
    return f"{prefix}/sightings/{region_levels(geohash)}/#"


def status_topic(prefix: str, device: str) -> str:
    """The (retained) status topic of one device: ``{prefix}/status/{device}``."""
    _check_prefix(prefix)
    return f"{prefix}/status/{_check_device(device)}"


def _check_device(device: str) -> str:
    if not isinstance(device, str) or not 1 <= len(device) <= MAX_DEVICE_LEN:
        raise ValueError(f"device id must be a str of 1..{MAX_DEVICE_LEN} characters")
    if not device.isascii() or not all(c.isalnum() or c in "-_" for c in device):
        raise ValueError(f"device id {device!r} must be ASCII letters, digits, '-' or '_' (no MQTT '/', '+', '#')")
    return device
