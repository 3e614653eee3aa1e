"""Pre-render a sprite bank of 3D camera models (RGBA PNGs + index.json) for the generator.

Runs in a separate venv (pyrender 0.1.45, trimesh, PyOpenGL 3.1.0), headless through EGL:

    PYOPENGL_PLATFORM=egl /work/rendervenv/bin/python models/synth/render_sprites.py \
        --out /work/data/sprites --per-model 40 --seed 0 [--src MODELS3D] [--cc0-only]

``--cc0-only`` renders only the six procedural CC0 models (the shipped run's bank also held the
dome ``arcvroom_cctv_draco``, licence unknown; it is rendered last, so the other six models'
sprites are the same either way).

Each sprite is the model seen from street level (mostly from below) at a random azimuth, with
random key/fill light, cropped to its alpha. The housing box (what a label covers: no pole,
arm, bracket or solar panel) comes from a second, depth-only render of the housing meshes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np
import pyrender  # type: ignore[import-not-found]
import trimesh  # type: ignore[import-not-found]
from PIL import Image

SRC = Path(__file__).resolve().parents[3] / "shared" / "data" / "synth" / "models3d"
SIZE = 320

# Only models whose whole bounding box is the housing, or whose housing meshes are known, are used
# (ms3d/grafkom/r3f/sketchfab models carry stems, brackets or cables inside their single mesh).
# model file, class, housing geometry names (None: all), azimuth spread (deg), focus (centre, radius) or None
MODELS: list[tuple[str, str, set[str] | None, float, tuple[tuple[float, float, float], float] | None]] = [
    ("procedural/dome_white.glb", "dome", None, 180, None),
    ("procedural/dome_dark.glb", "dome", None, 180, None),
    ("procedural/turret_eyeball.glb", "dome", None, 180, None),
    ("procedural/ptz_pendant_wallarm.glb", "ptz", {"geometry_3", "geometry_4"}, 100, None),
    ("procedural/bullet_simple.glb", "fixed", {"geometry_2", "geometry_3", "geometry_4"}, 110, None),
    ("procedural/alpr_flock_style_pole.glb", "alpr", {"geometry_2", "geometry_3"}, 110, ((0.0, 3.05, 0.2), 0.55)),
    ("arcvroom_cctv_draco/cctv_decoded.glb", "dome", None, 180, None),
]


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    f = target - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    u = np.cross(r, f)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = r, u, -f, eye
    return m


def build(tm: trimesh.Scene, keep: set[str] | None) -> pyrender.Scene:
    scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[0.25, 0.25, 0.25])
    for node in tm.graph.nodes_geometry:
        transform, geom = tm.graph[node]
        if keep is not None and geom not in keep:
            continue
        g = tm.geometry[geom]
        if not isinstance(g, trimesh.Trimesh):
            continue
        scene.add(pyrender.Mesh.from_trimesh(g, smooth=False), pose=transform)
    return scene


def render_model(
    rel: str,
    cls: str,
    housing: set[str] | None,
    az_spread: float,
    focus: tuple[tuple[float, float, float], float] | None,
    n: int,
    out: Path,
    rng: np.random.Generator,
    r: pyrender.OffscreenRenderer,
    src: Path = SRC,
) -> list[dict[str, object]]:
    tm = trimesh.load(src / rel, force="scene")
    if focus is None:
        lo, hi = tm.bounds
        centre, radius = (lo + hi) / 2, float(np.linalg.norm(hi - lo)) / 2
    else:
        centre, radius = np.array(focus[0]), focus[1]
    full = build(tm, None)
    hous = build(tm, housing) if housing is not None else None
    stem = rel.split("/", maxsplit=1)[0] if not rel.startswith("procedural") else Path(rel).stem
    items: list[dict[str, object]] = []
    fov = math.radians(25)
    dist = radius / math.sin(fov / 2) * 1.05
    for i in range(n):
        az = math.radians(float(rng.uniform(-az_spread, az_spread)))
        el = math.radians(float(rng.uniform(-45, 10)))  # mostly from below
        eye = centre + dist * np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])
        pose = look_at(eye, centre, np.array([0.0, 1.0, 0.0]))
        cam = pyrender.PerspectiveCamera(yfov=fov)
        light = pyrender.DirectionalLight(color=np.ones(3), intensity=float(rng.uniform(2.0, 6.0)))
        la = float(rng.uniform(-math.pi, math.pi))
        lpose = look_at(
            centre + np.array([math.sin(la), float(rng.uniform(0.3, 1.5)), math.cos(la)]),
            centre,
            np.array([0.0, 1.0, 0.0]),
        )
        nodes = [full.add(cam, pose=pose), full.add(light, pose=lpose)]
        rgba, _ = r.render(full, flags=pyrender.RenderFlags.RGBA)
        for nd in nodes:
            full.remove_node(nd)
        alpha = rgba[:, :, 3]
        ys, xs = np.nonzero(alpha > 20)
        if len(xs) == 0:
            continue
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        if hous is not None:
            cn = hous.add(cam, pose=pose)
            depth = r.render(hous, flags=pyrender.RenderFlags.DEPTH_ONLY)
            hous.remove_node(cn)
            hy, hx = np.nonzero(depth > 0)
            if len(hx) == 0:
                continue
            hb = [int(hx.min()), int(hy.min()), int(hx.max()) + 1, int(hy.max()) + 1]
        else:
            hb = [int(x0), int(y0), int(x1), int(y1)]
        crop = Image.fromarray(rgba[y0:y1, x0:x1], "RGBA")
        name = f"{stem}_{i:03d}.png"
        crop.save(out / name)
        housing_box = [hb[0] - int(x0), hb[1] - int(y0), hb[2] - int(x0), hb[3] - int(y0)]
        items.append({"file": name, "class": cls, "housing": housing_box, "model": rel})
    return items


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=Path("/work/data/sprites"))
    ap.add_argument("--per-model", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--src", type=Path, default=SRC, help="the models3d/ folder (default: shared/data/synth/models3d)")
    ap.add_argument(
        "--cc0-only",
        action="store_true",
        help="only the CC0 procedural models (leaves out arcvroom_cctv_draco, licence unknown)",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    r = pyrender.OffscreenRenderer(SIZE, SIZE)
    index: list[dict[str, object]] = []
    for rel, cls, housing, spread, focus in MODELS:
        if not (args.src / rel).exists() or (args.cc0_only and not rel.startswith("procedural/")):
            continue
        try:
            items = render_model(rel, cls, housing, spread, focus, args.per_model, args.out, rng, r, args.src)
        except Exception as exc:  # a broken model must not stop the bank
            print(f"skip {rel}: {exc}")
            continue
        print(f"{rel}: {len(items)} sprites")
        index.extend(items)
    (args.out / "index.json").write_text(json.dumps(index, indent=1))
    r.delete()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
