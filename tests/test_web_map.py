"""The web map (mapper/web/server.py and static/) against a real on-disk SqliteStore.

HTTP tests speak to the running server with http.client (which sends a path exactly as
given, ``..`` included); the browser test loads the page in headless Debian Chromium through
Selenium with no tile URL, so the page must work without any network but this server.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapper.web.server import MapServer, serve, tile_source
from tests.test_export import IDS, NASTY, NASTY_ID, OBSERVER_ID, RAY_SIGHTING, SPECS, make_store

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BERLIN_BBOX = "13.39,52.51,13.41,52.53"  # the first five entities, not the sixth


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MapServer]:
    store = make_store(tmp_path_factory.mktemp("web") / "map.sqlite")
    srv = serve(store, port=0)
    thread = threading.Thread(target=srv.serve_forever, name="map-server", daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)
    store.close()


def request(srv: MapServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(srv: MapServer, path: str) -> tuple[int, Any]:
    status, headers, body = request(srv, path)
    assert headers["content-type"].startswith(("application/json", "application/geo+json"))
    return status, json.loads(body)


# ---- API --------------------------------------------------------------------------------------


def test_entities_all_and_by_bbox(server: MapServer) -> None:
    status, doc = get_json(server, "/api/entities.geojson")
    assert status == 200 and doc["type"] == "FeatureCollection" and doc["truncated"] is False
    assert {f["id"] for f in doc["features"]} == set(IDS)
    status, doc = get_json(server, f"/api/entities.geojson?bbox={BERLIN_BBOX}")
    assert status == 200
    assert {f["id"] for f in doc["features"]} == set(IDS[:5])
    status, doc = get_json(server, f"/api/entities.geojson?bbox={BERLIN_BBOX}&min_confidence=0.5")
    assert {f["id"] for f in doc["features"]} == {IDS[0], IDS[1], IDS[3]}
    first = next(f for f in doc["features"] if f["id"] == NASTY_ID)
    assert first["geometry"]["coordinates"] == [13.4, 52.52]
    assert first["properties"]["tags"]["operator"] == NASTY
    status, doc = get_json(server, "/api/entities.geojson?bbox=0,0,1,1")
    assert status == 200 and doc["features"] == []


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("bbox=1,2,3", "bbox"),
        ("bbox=a,b,c,d", "bbox"),
        ("bbox=13,52,nan,53", "bbox"),
        ("bbox=-200,0,10,10", "bbox"),
        ("bbox=10,0,-10,10", "bbox"),
        ("bbox=0,80,10,95", "bbox"),
        ("bbox=0,0,1,1&bbox=0,0,2,2", "bbox"),
        ("bbox=", "bbox"),
        ("min_confidence=x", "min_confidence"),
        ("min_confidence=1.5", "min_confidence"),
        ("min_confidence=inf", "min_confidence"),
        ("min_confidence=-0.1", "min_confidence"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(server: MapServer, query: str, parameter: str) -> None:
    status, doc = get_json(server, f"/api/entities.geojson?{query}")
    assert status == 400
    assert doc["parameter"] == parameter and doc["error"].startswith(f"{parameter}: ")


def test_bad_input_is_not_reflected(server: MapServer) -> None:
    status, _, body = request(server, "/api/entities.geojson?bbox=%3Cscript%3E,1,2,3")
    assert status == 400 and b"script" not in body
    status, _, body = request(server, "/nope%3Cscript%3E")
    assert status == 404 and b"script" not in body


def test_rays_of_an_entity(server: MapServer) -> None:
    status, doc = get_json(server, f"/api/entities/{NASTY_ID}/rays.geojson")
    assert status == 200 and doc["type"] == "FeatureCollection"
    assert len(doc["features"]) == 3
    assert {f["properties"]["sighting_id"] for f in doc["features"]} == {RAY_SIGHTING}
    assert [f["properties"]["outlier"] for f in doc["features"]] == [False, False, True]
    assert all(f["geometry"]["type"] == "LineString" for f in doc["features"])
    status, doc = get_json(server, f"/api/entities/{IDS[1]}/rays.geojson")
    assert status == 200 and doc["features"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/entities/00000000-0000-4000-8000-000000000000/rays.geojson",
        "/api/entities/..%2F..%2Fetc/rays.geojson",
        "/api/entities/x/y/rays.geojson",
        "/api/nothing",
        "/static/missing.js",
        "/static/",
        "/static/leaflet",
    ],
)
def test_unknown_is_404(server: MapServer, path: str) -> None:
    status, headers, body = request(server, path)
    assert status == 404, path
    assert headers["content-type"] == "application/json" and json.loads(body)["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/%2E%2E/%2E%2E/export.py",
        "/static/..%2fserver.py",
        "/static/leaflet/../../server.py",
        "/static/.%2e/__init__.py",
        "/static/%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/..\\server.py",
    ],
)
def test_directory_traversal_refused(server: MapServer, path: str) -> None:
    status, _, body = request(server, path)
    assert status == 404, path
    assert b"import" not in body and b"root:" not in body


def test_static_files_and_page(server: MapServer) -> None:
    status, headers, body = request(server, "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b'src="/static/leaflet/leaflet.js"' in body and b"<script>" not in body  # no inline script
    status, headers, body = request(server, "/static/leaflet/leaflet.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and b"Leaflet 1.9.4" in body
    status, headers, _ = request(server, "/static/leaflet/images/layers.png")
    assert status == 200 and headers["content-type"] == "image/png"
    status, _, body = request(server, "/static/leaflet/LICENSE")
    assert status == 200 and b"BSD 2-Clause" in body


def test_security_headers_and_methods(server: MapServer) -> None:
    for path in ("/", "/api/entities.geojson", "/nope", "/static/map.js"):
        _, headers, _ = request(server, path)
        assert headers["x-content-type-options"] == "nosniff"
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "img-src 'self';" in csp
        assert "unsafe" not in csp and "*" not in csp
    status, headers, body = request(server, "/", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = request(server, "/api/entities.geojson", method)
        assert status == 405 and headers["allow"] == "GET, HEAD"


def test_config_and_health(server: MapServer) -> None:
    status, doc = get_json(server, "/api/config.json")
    assert status == 200 and doc["tile_url"] == "" and doc["attribution"] == ""
    status, doc = get_json(server, "/healthz")
    assert status == 200 and doc["status"] == "ok" and doc["entities"] == len(SPECS)


def test_tile_url_goes_into_config_and_csp(tmp_path: Path) -> None:
    store = make_store(tmp_path / "map.sqlite")
    srv = serve(store, port=0, tile_url="https://{s}.tile.example.org/{z}/{x}/{y}.png")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        _, headers, _ = request(srv, "/")
        assert "img-src 'self' https://*.tile.example.org;" in headers["content-security-policy"]
        _, doc = get_json(srv, "/api/config.json")
        assert doc["tile_url"] == "https://{s}.tile.example.org/{z}/{x}/{y}.png"
    finally:
        srv.shutdown()
        srv.server_close()
        store.close()
    assert tile_source("https://tile.openstreetmap.org/{z}/{x}/{y}.png") == "https://tile.openstreetmap.org"
    for bad in ("ftp://x/{z}/{x}/{y}", "https://x/tiles.png", "https://x; script-src */{z}/{x}/{y}", "javascript:1"):
        with pytest.raises(ValueError, match="tile URL"):
            tile_source(bad)


def test_requests_are_logged_through_logging(server: MapServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="sousveil.mapper.web"):
        host, port = server.server_address[:2]
        with socket.create_connection((str(host), int(port)), timeout=5) as sock:
            sock.sendall(b"GET /healthz?\x1b[31m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 2
        while not any("/healthz" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    messages = [r.getMessage() for r in caplog.records if r.name == "sousveil.mapper.web"]
    assert any("GET /healthz" in m and " 200 " in m for m in messages), messages
    assert not any("\x1b" in m for m in messages)


# ---- browser ----------------------------------------------------------------------------------


def _chrome() -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium not installed: pip install -e '.[dev]'")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("chromium/chromedriver not installed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = _chrome()
    try:
        yield driver
    finally:
        driver.quit()


def test_page_in_headless_chromium(server: MapServer, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 10)
    browser.get(server.url + "/")
    # the initial load takes every entity and fits the view to them; a pan or zoom refetches by bbox (below)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "path.sv-entity")) == len(SPECS))
    wait.until(lambda d: int(d.find_element(By.ID, "map").get_attribute("data-sv-loads") or 0) >= 1)
    markers = {m.get_attribute("data-entity-id"): m for m in browser.find_elements(By.CSS_SELECTOR, "path.sv-entity")}
    assert set(markers) == set(IDS)
    for eid, label, *_ in SPECS:
        assert f"sv-{label}" in (markers[eid].get_attribute("class") or "").split(), eid
    assert len(browser.find_elements(By.CSS_SELECTOR, "path.sv-alpr.sv-entity")) == 1
    # more confident: more opaque
    opacity = {eid: float(m.get_attribute("fill-opacity") or 0) for eid, m in markers.items()}
    assert opacity[IDS[5]] > opacity[IDS[0]] > opacity[IDS[1]] > opacity[OBSERVER_ID]
    # a direction line for each entity that has one
    assert len(browser.find_elements(By.CSS_SELECTOR, "path.sv-direction")) == 3
    legend = browser.find_element(By.CLASS_NAME, "sv-legend").text
    assert all(name in legend for name in ("fixed camera", "dome camera", "PTZ camera", "ALPR camera"))
    assert browser.find_elements(By.CLASS_NAME, "leaflet-control-scale-line")

    # the popup shows tags (text, never markup), passes and devices; the rays come with it
    browser.find_element(By.CSS_SELECTOR, f'path.sv-entity[data-entity-id="{NASTY_ID}"]').click()
    popup = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".leaflet-popup-content .sv-popup")))
    text = popup.text
    for expected in ("camera:type=fixed", "direction=90", "source=survey", "check_date=2025-06-11", "passes"):
        assert expected in text, (expected, text)
    assert "operator=Stadt <&\"'> Ü" in text
    assert popup.find_elements(By.XPATH, ".//dt[text()='passes']/following-sibling::dd[1][text()='2']")
    assert popup.find_elements(By.XPATH, ".//dt[text()='devices']/following-sibling::dd[1][text()='1']")
    assert not popup.find_elements(By.TAG_NAME, "script")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "path.sv-ray")) == 3)
    assert len(browser.find_elements(By.CSS_SELECTOR, "path.sv-ray.sv-outlier")) == 1

    # every pan or zoom fetches the cameras in view again, by bounding box (the first load took all)
    def zoom(control: str) -> tuple[int, list[float]]:
        before = loads()
        browser.execute_script(f"document.querySelector('.leaflet-control-zoom-{control}').click()")
        wait.until(lambda d: loads() > before)
        urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        boxes = [u.split("bbox=", 1)[1] for u in urls if "/api/entities.geojson?bbox=" in u]
        assert boxes, urls
        count = int(browser.find_element(By.ID, "map").get_attribute("data-sv-count") or 0)
        return count, [float(v) for v in boxes[-1].split(",")]

    def loads() -> int:
        return int(browser.find_element(By.ID, "map").get_attribute("data-sv-loads") or 0)

    for _ in range(3):
        count, (west, south, east, north) = zoom("in")
    assert count < len(SPECS)  # only what is in the (small) view
    assert count == sum(west <= lon <= east and south <= lat <= north for _, _, lat, lon, *_ in SPECS)
    for _ in range(4):
        count, (west, south, east, north) = zoom("out")
    assert count == len(SPECS)
    assert all(west <= lon <= east and south <= lat <= north for _, _, lat, lon, *_ in SPECS)

    # no tile URL: no tiles, and nothing fetched from anywhere but this server
    assert not browser.find_elements(By.CSS_SELECTOR, "img.leaflet-tile")
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(server.url + "/") for u in urls), urls
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems
