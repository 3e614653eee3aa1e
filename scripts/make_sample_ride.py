"""Make the sample ride: a simulated 12 s bike ride up a street in Lund past four cameras.

Run by hand (needs ../shared/data and the sprite bank rendered by models/synth/render_sprites.py
from the project's own CC0 procedural models); the output is committed under samples/ride/.

    .venv/bin/python scripts/make_sample_ride.py [--sprites /work/data/sprites]

The world is known. The bike rides north from LAT0/LON0 at about 6 m/s, slows to ~4.8 m/s
around t = 7 s and speeds up again, and follows a gentle right-hand bend (its heading turns
from 0 to 6 degrees between t = 1.5 s and 9.5 s). Each camera stands at a fixed point beside
that path (so far along it, so far to the right, so high) and is drawn in every frame where a
pinhole camera (hfov 66 deg, 1.2 m above the street, looking along the bike's heading) sees it:
its sprite is pasted with the housing centred on the projected point, scaled to
focal * housing width / depth. The background is OpenSfM's Lund photo (BSD-2-Clause, see
samples/README.md), zoomed with the distance ridden to suggest forward motion and panned with
the heading. The frames come from the TRUE path; only the GPS track is noisy (``gps_track``):
a slowly wandering offset of a few metres plus per-fix jitter, with an HDOP to match.

Writes lund-ride.mp4 (H.264), lund-ride.gpx (GPX 1.1, 1 Hz, with HDOP) and truth.json (the
cameras' true positions, the true path at each fix and the GPS error written there).
Deterministic for a given NumPy/PyAV/libx264 build (fixed seeds, one encoder thread).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.geometry import from_local  # noqa: E402
from firmware.position import HDOP_TO_M  # noqa: E402

BACKGROUND = ROOT.parent / "shared" / "data" / "synth" / "backgrounds" / "opensfm_027.jpg"
OUT = ROOT / "samples" / "ride"
W, H, FPS, SECONDS = 1280, 720, 10, 12
N = FPS * SECONDS
HFOV = 66.0
FOCAL = (W / 2) / math.tan(math.radians(HFOV / 2))
EYE_M = 1.2  # the bike's camera above the street
LAT0, LON0 = 55.70470, 13.19100  # start of the ride, Lund
T0 = datetime(2026, 5, 1, 8, 30, 0, tzinfo=UTC)  # first frame = first fix
ZOOM_PER_M = 0.005  # background zoom, fraction per metre ridden (3 %/s at 6 m/s)
HAZE_M = (28.0, 40.0)  # cameras fade in from nothing at 40 m to full contrast at 28 m
VIDEO_SEED = 11  # sensor noise of the frames
GPS_SEED = 0  # the GPS error; its own generator, so the frames do not depend on it

# The true path: speed (m/s) and heading (degrees clockwise from north) over time.
CRUISE_MPS = 6.3
DIP_MPS, DIP_T_S, DIP_WIDTH_S = 1.5, 7.0, 2.0  # slows by 1.5 m/s around t = 7 s
TURN_DEG, TURN_S = 6.0, (1.5, 9.5)  # a gentle right-hand bend
PATH_DT_S = 0.001
PATH_SECONDS = 15.0  # beyond the ride, so that cameras past its end still lie on the path

# The GPS error (see gps_track): a slowly wandering offset plus per-fix jitter, per axis.
GPS_OFFSET_M = 2.5  # one sigma per axis of the wandering offset (~3.4 m horizontal RMS)
GPS_TAU_S = 30.0  # its correlation time, as tests/sim_world.py
GPS_SMOOTH_S = 3.0  # the receiver's navigation filter: the offset drifts smoothly, it does not jump
GPS_JITTER_M = 0.15  # one sigma per axis of the per-fix noise at HDOP_MEAN
HDOP_MEAN, HDOP_SWING = 0.7, 0.1  # HDOP wanders slowly around 0.7 (acc_m = HDOP * 5 m ~ the RMS error)
ELE_M, ELE_SIGMA_M = 40.0, 3.5  # GPS altitude is worse than position


@dataclass(frozen=True)
class WorldCamera:
    name: str
    sprite: str
    along_m: float  # distance along the path from the start to the point abreast of the camera
    right_m: float  # to the right of the path there (negative: left)
    up_m: float
    housing_m: float  # housing width in metres
    mount: str


CAMERAS = [
    WorldCamera("turret dome on a wall", "turret_eyeball_010.png", 36.0, 4.0, 3.5, 0.35, "wall, right"),
    WorldCamera("PTZ on a wall arm", "ptz_pendant_wallarm_002.png", 48.0, 5.0, 4.5, 0.35, "wall arm, right"),
    WorldCamera("Flock-style ALPR", "alpr_flock_style_pole_004.png", 58.0, -5.0, 3.0, 0.40, "pole, left"),
    WorldCamera("bullet on a facade", "bullet_simple_005.png", 68.0, 4.0, 4.0, 0.45, "facade, right"),
]


def speed_mps(t_s: NDArray[np.float64]) -> NDArray[np.float64]:
    return CRUISE_MPS - DIP_MPS * np.exp(-(((t_s - DIP_T_S) / DIP_WIDTH_S) ** 2))


def heading_deg(t_s: NDArray[np.float64]) -> NDArray[np.float64]:
    u = np.clip((t_s - TURN_S[0]) / (TURN_S[1] - TURN_S[0]), 0.0, 1.0)
    return TURN_DEG * u * u * (3.0 - 2.0 * u)  # smoothstep: the bend eases in and out


@dataclass(frozen=True)
class TruePath:
    """The bike's true path, integrated finely: time, distance ridden, east/north (m), heading (deg)."""

    t: NDArray[np.float64]
    s: NDArray[np.float64]
    east: NDArray[np.float64]
    north: NDArray[np.float64]
    heading: NDArray[np.float64]

    @classmethod
    def make(cls) -> TruePath:
        t = np.arange(0.0, PATH_SECONDS + PATH_DT_S / 2, PATH_DT_S)
        mid = t[:-1] + PATH_DT_S / 2  # midpoint rule
        ds = speed_mps(mid) * PATH_DT_S
        h = np.radians(heading_deg(mid))
        zero = np.zeros(1)
        s = np.concatenate([zero, np.cumsum(ds)])
        east = np.concatenate([zero, np.cumsum(ds * np.sin(h))])
        north = np.concatenate([zero, np.cumsum(ds * np.cos(h))])
        return cls(t, s, east, north, heading_deg(t))

    def at(self, t_s: float) -> tuple[float, float, float, float]:
        """(east, north, heading deg, distance ridden) at ride time ``t_s``."""
        return (
            float(np.interp(t_s, self.t, self.east)),
            float(np.interp(t_s, self.t, self.north)),
            float(np.interp(t_s, self.t, self.heading)),
            float(np.interp(t_s, self.t, self.s)),
        )

    def beside(self, along_m: float, right_m: float) -> tuple[float, float]:
        """(east, north) of the point ``right_m`` to the right of the path, ``along_m`` from its start."""
        if along_m > self.s[-1]:
            raise ValueError(f"{along_m} m is beyond the path ({self.s[-1]:.1f} m)")
        e = float(np.interp(along_m, self.s, self.east))
        n = float(np.interp(along_m, self.s, self.north))
        h = math.radians(float(np.interp(along_m, self.s, self.heading)))
        return e + right_m * math.cos(h), n - right_m * math.sin(h)


def background() -> Image.Image:
    with Image.open(BACKGROUND) as photo:
        w, h = photo.size  # 1024x768: crop to 16:9 around the street, as scripts/make_sample.py does
        crop_h = round(w * 9 / 16)
        top = (h - crop_h) // 3
        return photo.convert("RGB").crop((0, top, w, top + crop_h)).resize((W, H), Image.Resampling.LANCZOS)


def view(bg: Image.Image, s_m: float, heading: float) -> Image.Image:
    """The background zoomed by the distance ridden and panned by the heading (a rotation of the
    view: what is far away moves left by focal * tan(heading) when the bike turns right)."""
    z = 1.0 + ZOOM_PER_M * s_m
    cw, ch = W / z, H / z
    pan = FOCAL * math.tan(math.radians(heading)) / z  # in the background's pixels
    x0, y0 = (W - cw) / 2 + pan, (H - ch) / 2
    if x0 < 0 or x0 + cw > W:
        raise ValueError(f"the pan ({pan:.0f} px) runs off the zoomed background at {s_m:.1f} m")
    return bg.resize((W, H), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))


def project(
    cam_en: tuple[float, float], cam: WorldCamera, bike: tuple[float, float, float, float]
) -> tuple[float, float, float, float] | None:
    """(x, y, housing width px, depth m) of the camera's housing centre seen from ``bike``, or None."""
    e, n, heading, _ = bike
    h = math.radians(heading)
    de, dn = cam_en[0] - e, cam_en[1] - n
    depth = de * math.sin(h) + dn * math.cos(h)
    if depth < 1.0:
        return None
    right = de * math.cos(h) - dn * math.sin(h)
    x = W / 2 + FOCAL * right / depth
    y = H / 2 - FOCAL * (cam.up_m - EYE_M) / depth
    width = FOCAL * cam.housing_m / depth
    if width < 4.0 or not (width / 2 <= x <= W - width / 2 and width / 2 <= y <= H - width / 2):
        return None
    return x, y, width, depth


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


def gps_track(rng: np.random.Generator, seconds: int) -> list[dict[str, float]]:
    """The receiver's error at each 1 Hz fix: east/north/up metres and the HDOP it reports.

    Position error is mostly a slowly wandering offset, not white noise (tests/sim_world.py
    models it the same way): per axis a first-order Gauss-Markov process (sigma GPS_OFFSET_M,
    correlation time GPS_TAU_S), smoothed by the receiver's navigation filter (GPS_SMOOTH_S), so
    that it drifts by a few decimetres per second rather than jumping. On top, per-fix jitter
    (GPS_JITTER_M, scaled with the HDOP). The HDOP wanders slowly around HDOP_MEAN (buildings
    hide and show satellites); HDOP * HDOP_TO_M, the accuracy the pipeline reads from it, is
    about the RMS horizontal error of this model.
    """
    dt = 0.1
    steps_per_s = round(1 / dt)
    a_off = math.exp(-dt / GPS_TAU_S)
    b_smooth = math.exp(-dt / GPS_SMOOTH_S)
    a_hdop = math.exp(-dt / 10.0)
    sigma = np.array([GPS_OFFSET_M, GPS_OFFSET_M, ELE_SIGMA_M])
    raw = rng.normal(0.0, 1.0, 3) * sigma  # start in the stationary state: no warm-up transient
    smooth = raw.copy()
    hdop_z = float(rng.normal())
    out: list[dict[str, float]] = []
    for step in range(seconds * steps_per_s + 1):
        if step % steps_per_s == 0:
            hdop = round(min(1.0, max(0.5, HDOP_MEAN + HDOP_SWING * hdop_z)), 2)
            jitter = rng.normal(0.0, GPS_JITTER_M * hdop / HDOP_MEAN, 3) * np.array([1.0, 1.0, 1.5])
            err = smooth + jitter
            out.append({"east_m": float(err[0]), "north_m": float(err[1]), "up_m": float(err[2]), "hdop": hdop})
        raw = a_off * raw + math.sqrt(1 - a_off * a_off) * rng.normal(0.0, 1.0, 3) * sigma
        smooth = b_smooth * smooth + (1 - b_smooth) * raw
        hdop_z = a_hdop * hdop_z + math.sqrt(1 - a_hdop * a_hdop) * float(rng.normal())
    return out


def write_gpx(path: Path, fixes: list[dict[str, Any]]) -> None:
    points = []
    for k, fix in enumerate(fixes):
        t = (T0 + timedelta(seconds=k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        points.append(
            f'   <trkpt lat="{fix["gps_lat"]:.7f}" lon="{fix["gps_lon"]:.7f}"><ele>{fix["gps_ele"]:.1f}</ele>'
            f"<time>{t}</time><hdop>{fix['hdop']:.2f}</hdop></trkpt>"
        )
    body = "\n".join(points)
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="sousveil scripts/make_sample_ride.py" '
        'xmlns="http://www.topografix.com/GPX/1/1">\n'
        " <trk>\n  <name>sousveil sample ride, Lund (simulated, with GPS noise)</name>\n  <trkseg>\n"
        f"{body}\n  </trkseg>\n </trk>\n</gpx>\n",
        encoding="utf-8",
    )


def make_fixes(path: TruePath) -> list[dict[str, Any]]:
    """The true position and the GPS reading at each whole second of the ride."""
    fixes: list[dict[str, Any]] = []
    for k, err in enumerate(gps_track(np.random.default_rng(GPS_SEED), SECONDS)):
        e, n, heading, s = path.at(float(k))
        lat, lon = from_local(e, n, LAT0, LON0)
        glat, glon = from_local(e + err["east_m"], n + err["north_m"], LAT0, LON0)
        fixes.append(
            {
                "t_s": k,
                "lat": round(lat, 7),
                "lon": round(lon, 7),
                "east_m": round(e, 3),
                "north_m": round(n, 3),
                "heading_deg": round(heading, 2),
                "speed_mps": round(float(speed_mps(np.array([float(k)]))[0]), 3),
                "ridden_m": round(s, 3),
                "gps_lat": glat,
                "gps_lon": glon,
                "gps_ele": ELE_M + err["up_m"],
                "gps_error_m": [round(err["east_m"], 3), round(err["north_m"], 3)],
                "hdop": err["hdop"],
            }
        )
    return fixes


def render(args: argparse.Namespace, path: TruePath, index: dict[str, Any], cams: list[tuple[float, float]]) -> Path:
    sprites: dict[str, Image.Image] = {}
    for cam in CAMERAS:
        item = index[cam.sprite]
        assert item["model"].startswith("procedural/"), "only the CC0 procedural models may ship"
        with Image.open(args.sprites / cam.sprite) as im:
            sprites[cam.sprite] = im.convert("RGBA")
    bg = background()
    rng = np.random.default_rng(VIDEO_SEED)
    video = OUT / "lund-ride.mp4"
    with av.open(str(video), mode="w") as container:
        options = {"crf": str(args.crf), "preset": "medium", "threads": "1"}  # one thread: reproducible
        stream = container.add_stream("libx264", rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(N):
            bike = path.at(i / FPS)
            frame = view(bg, bike[3], bike[2])
            for cam, cam_en in zip(CAMERAS, cams, strict=True):
                p = project(cam_en, cam, bike)
                if p is not None and (opacity := haze(p[3])) > 0.0:
                    paste(frame, sprites[cam.sprite], index[cam.sprite]["housing"], p[0], p[1], p[2], opacity)
            frame = frame.filter(ImageFilter.GaussianBlur(0.6))  # mild motion/lens blur
            arr = np.asarray(frame).astype(np.int16)
            arr += rng.normal(0, 2.0, arr.shape).astype(np.int16)
            pixels = np.clip(arr, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return video


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sprites", type=Path, default=Path("/work/data/sprites"))
    ap.add_argument("--crf", type=int, default=23)
    args = ap.parse_args()
    if not BACKGROUND.exists():
        print(f"needs {BACKGROUND} (the shared data folder)", file=sys.stderr)
        return 1
    index = {item["file"]: item for item in json.loads((args.sprites / "index.json").read_text())}
    path = TruePath.make()
    cams = [path.beside(cam.along_m, cam.right_m) for cam in CAMERAS]
    OUT.mkdir(parents=True, exist_ok=True)
    video = render(args, path, index, cams)
    fixes = make_fixes(path)
    write_gpx(OUT / "lund-ride.gpx", fixes)
    errors = [math.hypot(*f["gps_error_m"]) for f in fixes]
    truth: dict[str, Any] = {
        "start_utc": T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fps": FPS,
        "frames": N,
        "size": [W, H],
        "hfov_deg": HFOV,
        "eye_height_m": EYE_M,
        "start": {"lat": LAT0, "lon": LON0},
        "path": {
            "speed": f"{CRUISE_MPS} m/s, slowing by {DIP_MPS} m/s around t = {DIP_T_S} s (Gaussian, {DIP_WIDTH_S} s)",
            "heading": f"0 deg (north), turning right to {TURN_DEG} deg between t = {TURN_S[0]} and {TURN_S[1]} s",
            "ridden_m": round(path.at(float(SECONDS))[3], 2),
        },
        "gps": {
            "model": (
                "per-axis Gauss-Markov offset (sigma, tau) smoothed by a first-order filter, "
                "plus white per-fix jitter scaled by HDOP / mean HDOP"
            ),
            "seed": GPS_SEED,
            "offset_sigma_m": GPS_OFFSET_M,
            "tau_s": GPS_TAU_S,
            "smooth_s": GPS_SMOOTH_S,
            "jitter_sigma_m": GPS_JITTER_M,
            "hdop_to_m": HDOP_TO_M,
            "error_m": {"mean": round(sum(errors) / len(errors), 2), "max": round(max(errors), 2)},
        },
        "fixes": [{k: v for k, v in f.items() if k not in ("gps_lat", "gps_lon", "gps_ele")} for f in fixes],
        "cameras": [],
    }
    for cam, (e, n) in zip(CAMERAS, cams, strict=True):
        lat, lon = from_local(e, n, LAT0, LON0)
        truth["cameras"].append(
            {
                "name": cam.name,
                "class": index[cam.sprite]["class"],
                "lat": round(lat, 7),
                "lon": round(lon, 7),
                "east_m": round(e, 3),
                "north_m": round(n, 3),
                "along_m": cam.along_m,
                "right_m": cam.right_m,
                "height_m": cam.up_m,
                "housing_width_m": cam.housing_m,
                "mount": cam.mount,
                "sprite": cam.sprite,
                "model": index[cam.sprite]["model"],
            }
        )
    (OUT / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {video} ({video.stat().st_size // 1024} KiB), lund-ride.gpx, truth.json")
    print(f"GPS error: mean {truth['gps']['error_m']['mean']} m, max {truth['gps']['error_m']['max']} m")
    return 0


if __name__ == "__main__":
    sys.exit(main())
