"""Make the sample ride: a simulated 12 s bike ride up a street in Lund past four cameras.

Run by hand (needs ../shared/data and the sprite bank rendered by models/synth/render_sprites.py
from the project's own CC0 procedural models); the output is committed under samples/ride/.

    .venv/bin/python scripts/make_sample_ride.py [--sprites /work/data/sprites]

The world is known: the bike rides north at 6 m/s from LAT0/LON0; each camera stands at a fixed
(east, north, up) point and is drawn in every frame where a pinhole camera (hfov 66 deg, 1.2 m
above the street, looking ahead) sees it: its sprite is pasted with the housing centred on the
projected point, scaled to focal * housing width / depth. The background is OpenSfM's Lund
photo (BSD-2-Clause, see samples/README.md), zoomed a little more each frame to suggest
forward motion. Writes lund-ride.mp4 (H.264), lund-ride.gpx (GPX 1.1, 1 Hz, with HDOP) and
truth.json (the cameras' true positions). Deterministic for a given PyAV/libx264 build.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.geometry import from_local  # noqa: E402

BACKGROUND = ROOT.parent / "shared" / "data" / "synth" / "backgrounds" / "opensfm_027.jpg"
OUT = ROOT / "samples" / "ride"
W, H, FPS, SECONDS = 1280, 720, 10, 12
N = FPS * SECONDS
HFOV = 66.0
FOCAL = (W / 2) / math.tan(math.radians(HFOV / 2))
SPEED = 6.0  # m/s, heading north
EYE_M = 1.2  # the bike's camera above the street
LAT0, LON0 = 55.70470, 13.19100  # start of the ride, Lund
T0 = datetime(2026, 5, 1, 8, 30, 0, tzinfo=UTC)  # first frame = first fix
HDOP = 0.8
ZOOM_PER_S = 0.03  # background zoom, fraction per second
HAZE_M = (28.0, 40.0)  # cameras fade in from nothing at 40 m to full contrast at 28 m


@dataclass(frozen=True)
class WorldCamera:
    name: str
    sprite: str
    east_m: float
    north_m: float
    up_m: float
    housing_m: float  # housing width in metres
    mount: str


CAMERAS = [
    WorldCamera("turret dome on a wall", "turret_eyeball_010.png", 4.0, 36.0, 3.5, 0.35, "wall, right"),
    WorldCamera("PTZ on a wall arm", "ptz_pendant_wallarm_002.png", 5.0, 48.0, 4.5, 0.35, "wall arm, right"),
    WorldCamera("Flock-style ALPR", "alpr_flock_style_pole_004.png", -5.0, 58.0, 3.0, 0.40, "pole, left"),
    WorldCamera("bullet on a facade", "bullet_simple_005.png", 6.0, 68.0, 3.5, 0.45, "facade, right"),
]


def background() -> Image.Image:
    with Image.open(BACKGROUND) as photo:
        w, h = photo.size  # 1024x768: crop to 16:9 around the street, as scripts/make_sample.py does
        crop_h = round(w * 9 / 16)
        top = (h - crop_h) // 3
        return photo.convert("RGB").crop((0, top, w, top + crop_h)).resize((W, H), Image.Resampling.LANCZOS)


def zoomed(bg: Image.Image, t_s: float) -> Image.Image:
    z = 1.0 + ZOOM_PER_S * t_s
    cw, ch = W / z, H / z
    x0, y0 = (W - cw) / 2, (H - ch) / 2
    return bg.resize((W, H), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))


def project(cam: WorldCamera, t_s: float) -> tuple[float, float, float] | None:
    """(x, y, housing width px) of the camera's housing centre at ride time ``t_s``, or None."""
    depth = cam.north_m - SPEED * t_s
    if depth < 1.0:
        return None
    x = W / 2 + FOCAL * cam.east_m / depth
    y = H / 2 - FOCAL * (cam.up_m - EYE_M) / depth
    width = FOCAL * cam.housing_m / depth
    if width < 4.0 or not (width / 2 <= x <= W - width / 2 and width / 2 <= y <= H - width / 2):
        return None
    return x, y, width


def haze(depth_m: float) -> float:
    """Opacity of a camera at ``depth_m``: distance haze, so that cameras do not flicker in at
    the detector's limit (~10 px) and split into several short tracks."""
    near, far = HAZE_M
    return min(1.0, max(0.0, (far - depth_m) / (far - near)))


def paste(
    frame: Image.Image, sprite: Image.Image, housing: list[float], x: float, y: float, width: float, opacity: float
) -> None:
    hx0, hy0, hx1, hy1 = housing
    s = width / (hx1 - hx0)
    size = (max(1, round(sprite.width * s)), max(1, round(sprite.height * s)))
    small = sprite.resize(size, Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(0.5))
    if opacity < 1.0:
        alpha = small.getchannel("A").point(lambda a: round(a * opacity))
        small.putalpha(alpha)
    ox = round(x - (hx0 + hx1) / 2 * s)
    oy = round(y - (hy0 + hy1) / 2 * s)
    frame.paste(small, (ox, oy), small)


def write_gpx(path: Path) -> None:
    points = []
    for k in range(SECONDS + 1):
        lat, lon = from_local(0.0, SPEED * k, LAT0, LON0)
        t = (T0 + timedelta(seconds=k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        points.append(
            f'   <trkpt lat="{lat:.7f}" lon="{lon:.7f}"><ele>40.0</ele><time>{t}</time><hdop>{HDOP}</hdop></trkpt>'
        )
    body = "\n".join(points)
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="sousveil scripts/make_sample_ride.py" '
        'xmlns="http://www.topografix.com/GPX/1/1">\n'
        " <trk>\n  <name>sousveil sample ride, Lund (simulated)</name>\n  <trkseg>\n"
        f"{body}\n  </trkseg>\n </trk>\n</gpx>\n",
        encoding="utf-8",
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sprites", type=Path, default=Path("/work/data/sprites"))
    ap.add_argument("--crf", type=int, default=23)
    args = ap.parse_args()
    if not BACKGROUND.exists():
        print(f"needs {BACKGROUND} (the shared data folder)", file=sys.stderr)
        return 1
    index = {item["file"]: item for item in json.loads((args.sprites / "index.json").read_text())}
    sprites: dict[str, Image.Image] = {}
    for cam in CAMERAS:
        item = index[cam.sprite]
        assert item["model"].startswith("procedural/"), "only the CC0 procedural models may ship"
        with Image.open(args.sprites / cam.sprite) as im:
            sprites[cam.sprite] = im.convert("RGBA")
    OUT.mkdir(parents=True, exist_ok=True)
    bg = background()
    rng = np.random.default_rng(11)
    video = OUT / "lund-ride.mp4"
    with av.open(str(video), mode="w") as container:
        options = {"crf": str(args.crf), "preset": "medium", "threads": "1"}  # one thread: reproducible
        stream = container.add_stream("libx264", rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(N):
            t_s = i / FPS
            frame = zoomed(bg, t_s)
            for cam in CAMERAS:
                p = project(cam, t_s)
                opacity = haze(cam.north_m - SPEED * t_s)
                if p is not None and opacity > 0.0:
                    paste(frame, sprites[cam.sprite], index[cam.sprite]["housing"], *p, opacity)
            frame = frame.filter(ImageFilter.GaussianBlur(0.6))  # mild motion/lens blur
            arr = np.asarray(frame).astype(np.int16)
            arr += rng.normal(0, 2.0, arr.shape).astype(np.int16)
            pixels = np.clip(arr, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    write_gpx(OUT / "lund-ride.gpx")
    truth = {
        "start_utc": T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fps": FPS,
        "frames": N,
        "size": [W, H],
        "hfov_deg": HFOV,
        "eye_height_m": EYE_M,
        "speed_mps": SPEED,
        "heading_deg": 0.0,
        "start": {"lat": LAT0, "lon": LON0},
        "cameras": [],
    }
    for cam in CAMERAS:
        lat, lon = from_local(cam.east_m, cam.north_m, LAT0, LON0)
        truth["cameras"].append(  # type: ignore[union-attr]
            {
                "name": cam.name,
                "class": index[cam.sprite]["class"],
                "lat": round(lat, 7),
                "lon": round(lon, 7),
                "east_m": cam.east_m,
                "north_m": cam.north_m,
                "height_m": cam.up_m,
                "housing_width_m": cam.housing_m,
                "mount": cam.mount,
                "sprite": cam.sprite,
                "model": index[cam.sprite]["model"],
            }
        )
    (OUT / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {video} ({video.stat().st_size // 1024} KiB), lund-ride.gpx, truth.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
