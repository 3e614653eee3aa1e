"""The map's outputs (mapper/export.py) from a real on-disk SqliteStore.

GeoJSON is checked against RFC 7946's structure, the OSM review file and KML are parsed
back with ElementTree, the CSV is read back with csv.DictReader; one entity carries
``<&"'>`` in a tag value to prove every format escapes it.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware.position.interpolate import distance_m
from firmware.sighting import ModelRef, Position, Ray, Sighting, suggested_tags
from mapper.entity import Entity, EntityRay
from mapper.export import (
    CSV_FIELDS,
    RAY_DEFAULT_M,
    RAY_MAX_M,
    ExportError,
    export,
    feature_collection,
    ray_feature,
    write_csv,
    write_geojson,
    write_osm,
)
from mapper.store import Fused, SqliteStore

T0 = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
NASTY = "Stadt <&\"'> Ü\x01"  # markup, quotes, non-ASCII and a control character
KML = "{http://www.opengis.net/kml/2.2}"

# id, label, lat, lon, confidence, method, direction, extra tags; the last one is ~2.4 km away
SPECS: list[tuple[str, str, float, float, float, str, float | None, dict[str, str]]] = [
    ("11111111-1111-4111-8111-111111111111", "fixed", 52.5200, 13.4000, 0.9, "rays", 90.0, {"operator": NASTY}),
    ("22222222-2222-4222-8222-222222222222", "dome", 52.5215, 13.4030, 0.6, "rays", None, {}),
    ("33333333-3333-4333-8333-333333333333", "ptz", 52.5185, 13.4050, 0.4, "estimates", 200.0, {}),
    ("44444444-4444-4444-8444-444444444444", "alpr", 52.5230, 13.3970, 0.8, "rays", None, {}),
    ("55555555-5555-4555-8555-555555555555", "fixed", 52.5170, 13.3960, 0.3, "observer", None, {}),
    ("66666666-6666-4666-8666-666666666666", "dome", 52.5350, 13.4250, 0.95, "rays", 10.0, {}),
]
IDS = [s[0] for s in SPECS]
OBSERVER_ID = IDS[4]
NASTY_ID = IDS[0]
RAY_SIGHTING = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"


def make_entities() -> list[Entity]:
    out = []
    for i, (eid, label, lat, lon, conf, method, direction, extra) in enumerate(SPECS):
        out.append(
            Entity(
                id=eid,
                lat_deg=lat,
                lon_deg=lon,
                sigma_m=2.5 + i,
                label=label,
                votes={label: 3.0 + i},
                confidence=conf,
                passes=2 + i,
                devices=1 + i % 3,
                first_seen_utc=T0 + timedelta(days=i),
                last_seen_utc=T0 + timedelta(days=10 + i, hours=3),
                method=method,  # type: ignore[arg-type]
                direction_deg=direction,
                extra_tags=extra,
            )
        )
    return out


def ray_sighting() -> Sighting:
    """A real sighting of the first entity: a rider 30 m south looking north (one ray an outlier)."""
    lat0 = SPECS[0][2] - 30 / 111_320
    rays = tuple(Ray(T0 + timedelta(milliseconds=200 * i), lat0, 13.4000, 4.0, 0.0 + i, 3.0) for i in range(3))
    return Sighting(
        id=RAY_SIGHTING,
        device="3f9a1c0e5b7d2468",
        first_seen_utc=rays[0].t_utc,
        last_seen_utc=rays[-1].t_utc,
        label="fixed",
        score=0.8,
        frames=5,
        observer=Position(lat0, 13.4000, 4.0),
        rays=rays,
        estimate=None,
        tags=suggested_tags("fixed"),
        model=ModelRef("sousveil-cams", "0.1.0", "ab" * 32),
    )


def make_store(path: Path) -> SqliteStore:
    """A real store on disk with :data:`SPECS` and one sighting (3 rays) assigned to the first entity."""
    store = SqliteStore(path)
    store.add_sightings([ray_sighting()])
    store.save_fusion(
        Fused(
            entities=make_entities(),
            assign={RAY_SIGHTING: IDS[0]},
            outliers={IDS[0]: [(RAY_SIGHTING, 2)]},
            merged={},
        )
    )
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = make_store(tmp_path / "map.sqlite")
    yield s
    s.close()


# ---- GeoJSON ----------------------------------------------------------------------------------


def check_rfc7946(doc: Any) -> None:
    """The structure RFC 7946 asks for: FeatureCollection of Features, positions [lon, lat], no crs."""
    assert doc["type"] == "FeatureCollection"
    assert "crs" not in doc
    assert isinstance(doc["features"], list)
    for f in doc["features"]:
        assert f["type"] == "Feature"
        assert isinstance(f["properties"], dict)
        geom = f["geometry"]
        positions = [geom["coordinates"]] if geom["type"] == "Point" else geom["coordinates"]
        assert geom["type"] in ("Point", "LineString")
        if geom["type"] == "LineString":
            assert len(positions) >= 2
        for lon, lat in positions:
            assert -180 <= lon <= 180 and -90 <= lat <= 90
            assert all(math.isfinite(v) and round(v, 7) == v for v in (lon, lat))


def test_geojson_points(store: SqliteStore) -> None:
    buf = io.StringIO()
    assert write_geojson(store.entities(), buf) == len(SPECS)
    doc = json.loads(buf.getvalue(), parse_constant=lambda c: pytest.fail(f"{c} in GeoJSON"))
    check_rfc7946(doc)
    by_id = {f["id"]: f for f in doc["features"]}
    assert set(by_id) == set(IDS)
    for spec in SPECS:
        f = by_id[spec[0]]
        assert f["geometry"] == {"type": "Point", "coordinates": [spec[3], spec[2]]}  # [lon, lat]
        p = f["properties"]
        assert p["id"] == spec[0] and p["label"] == spec[1] and p["confidence"] == spec[4]
        assert p["method"] == spec[5] and p["direction_deg"] == spec[6]
        for key in ("sigma_m", "passes", "devices", "first_seen_utc", "last_seen_utc", "check_date", "tags"):
            assert key in p
    first = by_id[NASTY_ID]["properties"]
    assert first["passes"] == 2 and first["devices"] == 1 and first["sigma_m"] == 2.5
    assert first["first_seen_utc"] == "2025-06-01T08:30:00.000Z"
    assert first["last_seen_utc"] == "2025-06-11T11:30:00.000Z"
    assert first["check_date"] == "2025-06-11"
    assert first["tags"]["operator"] == NASTY
    assert first["tags"]["camera:type"] == "fixed" and first["tags"]["direction"] == "90"
    assert first["tags"]["source"] == "survey" and first["tags"]["check_date"] == "2025-06-11"


def test_geojson_rays_from_rider_towards_entity(store: SqliteStore, tmp_path: Path) -> None:
    out = tmp_path / "map.geojson"
    assert export(store, "geojson", out, rays=True) == len(SPECS)
    doc = json.loads(out.read_text(encoding="utf-8"))
    check_rfc7946(doc)
    lines = [f for f in doc["features"] if f["geometry"]["type"] == "LineString"]
    assert len(lines) == 3
    assert {f["properties"]["sighting_id"] for f in lines} == {RAY_SIGHTING}
    assert all(f["properties"]["entity_id"] == NASTY_ID for f in lines)
    assert [f["properties"]["outlier"] for f in lines] == [False, False, True]
    (lon0, lat0), (lon1, lat1) = lines[0]["geometry"]["coordinates"]
    assert lat0 == round(SPECS[0][2] - 30 / 111_320, 7) and lon0 == 13.4
    # bearing 0: due north, about as far as the entity (30 m)
    assert lon1 == pytest.approx(13.4, abs=1e-7)
    assert distance_m(lat0, lon0, lat1, lon1) == pytest.approx(30.0, abs=0.5)


@pytest.mark.parametrize(("east_deg", "length_m"), [(0.01, None), (0.1, RAY_MAX_M), (1e-6, RAY_DEFAULT_M)])
def test_a_ray_runs_along_its_bearing_as_far_as_the_entity(east_deg: float, length_m: float | None) -> None:
    """Due east from the rider to the entity (677 m away), at most 1 km, 50 m when the rider stood on it."""
    rider = (52.52, 13.40)
    e = replace(make_entities()[0], lat_deg=rider[0], lon_deg=rider[1] + east_deg)
    feature = ray_feature(e, EntityRay(RAY_SIGHTING, *rider, 90.0, 2.0, False))
    (lon0, lat0), (lon1, lat1) = feature["geometry"]["coordinates"]
    assert (lat0, lon0) == rider and lat1 == rider[0] and lon1 > rider[1]
    expected = distance_m(*rider, e.lat_deg, e.lon_deg) if length_m is None else length_m
    assert distance_m(lat0, lon0, lat1, lon1) == pytest.approx(expected, abs=0.02)  # 7 decimals: about 1 cm


def test_geojson_refuses_nan() -> None:
    e = make_entities()[0]
    bad = replace(e, sigma_m=float("nan"))
    with pytest.raises(ValueError):
        write_geojson([bad], io.StringIO())
    assert feature_collection([]) == {"type": "FeatureCollection", "features": []}


# ---- OSM review file --------------------------------------------------------------------------


def test_osm_review_file(store: SqliteStore, tmp_path: Path) -> None:
    out = tmp_path / "review.osm"
    n = export(store, "osm", out)
    text = out.read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "osm"
    assert root.attrib == {"version": "0.6", "generator": "sousveil-mapper", "upload": "never"}
    nodes = root.findall("node")
    assert n == len(nodes) == len(SPECS) - 1  # the observer-placed entity is left out
    assert sorted(int(node.get("id", "0")) for node in nodes) == list(range(-len(nodes), 0))
    for node in nodes:
        assert "version" not in node.attrib and "action" not in node.attrib
    first = nodes[0]
    assert (first.get("lat"), first.get("lon")) == ("52.5200000", "13.4000000")
    tags = {t.get("k"): t.get("v") for t in first.findall("tag")}
    assert tags["man_made"] == "surveillance" and tags["surveillance"] == "outdoor"
    assert tags["surveillance:type"] == "camera" and tags["camera:type"] == "fixed"
    assert tags["direction"] == "90" and tags["source"] == "survey" and tags["check_date"] == "2025-06-11"
    # escaped on the way out, intact on the way back (the control character cannot be XML at all)
    assert tags["operator"] == "Stadt <&\"'> Ü\ufffd"
    assert "&lt;&amp;&quot;'&gt;" in text or "&lt;&amp;&quot;&apos;&gt;" in text
    assert tags["fixme"] == "sousveil: 2 passes by 1 devices, confidence 0.90, sigma 2.5 m; check before upload"
    alpr = {t.get("k"): t.get("v") for t in nodes[3].findall("tag")}
    assert alpr["surveillance:type"] == "ALPR" and "camera:type" not in alpr


def test_osm_min_confidence_and_observer(store: SqliteStore) -> None:
    entities = store.entities()
    buf = io.StringIO()
    assert write_osm(entities, buf, min_confidence=0.7) == 3  # 0.9, 0.8, 0.95
    assert write_osm(entities, io.StringIO(), include_observer=True) == len(SPECS)
    assert export(store, "osm", io.StringIO(), min_confidence=0.85) == 2


# ---- CSV --------------------------------------------------------------------------------------


def test_csv_round_trip(store: SqliteStore, tmp_path: Path) -> None:
    out = tmp_path / "map.csv"
    assert export(store, "csv", out) == len(SPECS)
    with out.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CSV_FIELDS
        rows = {r["id"]: r for r in reader}
    assert set(rows) == set(IDS)
    for eid, label, lat, lon, conf, method, direction, _ in SPECS:
        r = rows[eid]
        assert float(r["lat"]) == lat and float(r["lon"]) == lon
        assert r["label"] == label and float(r["confidence"]) == conf and r["method"] == method
        assert r["direction_deg"] == ("" if direction is None else f"{direction:g}")
    r = rows[NASTY_ID]
    assert (r["sigma_m"], r["passes"], r["devices"]) == ("2.5", "2", "1")
    assert (r["first_seen_utc"], r["last_seen_utc"], r["check_date"]) == (
        "2025-06-01T08:30:00.000Z",
        "2025-06-11T11:30:00.000Z",
        "2025-06-11",
    )


def test_csv_cell_cannot_become_a_formula() -> None:
    e = make_entities()[0]
    buf = io.StringIO()
    write_csv([replace(e, id="=HYPERLINK(1)")], buf)
    row = next(csv.DictReader(io.StringIO(buf.getvalue())))
    assert row["id"] == "'=HYPERLINK(1)"
    assert row["lon"] == "13.4000000"  # numbers are numbers (a negative one keeps its sign)


# ---- KML --------------------------------------------------------------------------------------


def test_kml_placemarks(store: SqliteStore, tmp_path: Path) -> None:
    out = tmp_path / "map.kml"
    assert export(store, "kml", out) == len(SPECS)
    root = ET.parse(out).getroot()
    assert root.tag == f"{KML}kml"
    doc = root.find(f"{KML}Document")
    assert doc is not None
    styles = {s.get("id") for s in doc.findall(f"{KML}Style")}
    assert styles == {"sv-fixed", "sv-dome", "sv-ptz", "sv-alpr"}
    marks = doc.findall(f"{KML}Placemark")
    assert len(marks) == len(SPECS)
    by_id: dict[str, ET.Element] = {}
    for pm in marks:
        data = {d.get("name"): d.findtext(f"{KML}value") for d in pm.iter(f"{KML}Data")}
        by_id[str(data["id"])] = pm
        assert pm.findtext(f"{KML}styleUrl") == f"#sv-{data['label']}"
    pm = by_id[NASTY_ID]
    assert pm.findtext(f"{KML}Point/{KML}coordinates") == "13.4000000,52.5200000"  # lon,lat
    data = {d.get("name"): d.findtext(f"{KML}value") for d in pm.iter(f"{KML}Data")}
    assert data["tag:operator"] == "Stadt <&\"'> Ü\ufffd"
    assert data["passes"] == "2" and data["check_date"] == "2025-06-11"
    # the description is HTML to a viewer: the tag value arrives HTML-escaped, never as markup
    desc = pm.findtext(f"{KML}description") or ""
    assert "<&" not in desc and "operator=Stadt &lt;&amp;&quot;&#x27;&gt;" in desc
    assert "operator=" + NASTY.replace("\x01", "\ufffd") in html.unescape(desc)


# ---- errors -----------------------------------------------------------------------------------


def test_export_errors_name_the_problem(store: SqliteStore, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown export format 'shp'"):
        export(store, "shp", io.StringIO())
    with pytest.raises(ExportError, match="rays: only the geojson format"):
        export(store, "csv", io.StringIO(), rays=True)
    with pytest.raises(ExportError, match=r"min_confidence must be within 0\.\.1"):
        export(store, "csv", io.StringIO(), min_confidence=1.5)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match=r"cannot write .*file/out\.csv"):
        export(store, "csv", blocker / "out.csv")
    assert not list(tmp_path.glob("**/*.tmp"))
