"""Convert a YOLO-format export of a labelling tool into the COCO folder training reads.

Labelling tools (Label Studio, CVAT, Roboflow, makesense.ai) export YOLO as ``images/``
and ``labels/`` (one ``NAME.txt`` per image: ``class cx cy w h`` per line, normalised to
0..1) with the class names in ``classes.txt`` (Label Studio, makesense) or ``data.yaml``
(``names:`` list; CVAT, Roboflow). Training and ``sousveil evaluate`` read COCO:
``labels.json`` beside ``images/``. Class names must be the model's: fixed, dome, ptz, alpr.

    python -m models.yolo2coco EXPORT_DIR OUT_DIR

Images are copied (not moved); a line that cannot be read is an error naming the file
and line, so nothing is dropped silently.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from firmware.sighting import LABELS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CLASSES = LABELS  # the sighting contract's classes


class ConversionError(Exception):
    """The export cannot be converted; the message names the file (and line)."""


def read_class_names(export: Path) -> list[str]:
    classes_txt = export / "classes.txt"
    if classes_txt.exists():
        return [line.strip() for line in classes_txt.read_text(encoding="utf-8").splitlines() if line.strip()]
    data_yaml = export / "data.yaml"
    if data_yaml.exists():
        text = data_yaml.read_text(encoding="utf-8")
        inline = re.search(r"^names:\s*\[(.*)\]\s*$", text, re.MULTILINE)
        if inline:
            return [n.strip().strip("'\"") for n in inline.group(1).split(",") if n.strip()]
        block = re.search(r"^names:\s*\n((?:[ \t]+.*\n?)+)", text, re.MULTILINE)
        if block:
            names = []
            for line in block.group(1).splitlines():
                item = re.match(r"\s*(?:-\s*|\d+\s*:\s*)(.+)", line)
                if item:
                    names.append(item.group(1).strip().strip("'\""))
            return names
    raise ConversionError(f"{export}: no classes.txt or data.yaml with the class names")


def convert(export: Path, out: Path) -> dict[str, Any]:
    """Write ``out/labels.json`` and ``out/images/``; returns the COCO dict."""
    names = read_class_names(export)
    unknown = [n for n in names if n not in CLASSES]
    if unknown:
        raise ConversionError(f"{export}: classes {unknown} are not sousveil's ({', '.join(CLASSES)}); rename them")
    image_dir = export / "images"
    label_dir = export / "labels"
    if not image_dir.is_dir():
        raise ConversionError(f"{export}: no images/ folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for path in sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = path.relative_to(image_dir)
        with Image.open(path) as img:
            width, height = img.size
        image_id = len(images) + 1
        file_name = str(rel).replace("/", "__")
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        shutil.copy2(path, out / "images" / file_name)
        label = label_dir / rel.with_suffix(".txt")
        if not label.exists():
            continue  # an image without a label file is a negative: no camera in it
        for n, line in enumerate(label.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                cls = int(parts[0])
                cx, cy, w, h = (float(v) for v in parts[1:5])
                if len(parts) != 5 or not 0 <= cls < len(names):
                    raise ValueError
            except (ValueError, IndexError):
                raise ConversionError(f"{label}:{n}: expected 'class cx cy w h', got {line.strip()!r}") from None
            if not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1):
                raise ConversionError(f"{label}:{n}: coordinates must be normalised to 0..1, got {line.strip()!r}")
            x1 = max(0.0, (cx - w / 2) * width)
            y1 = max(0.0, (cy - h / 2) * height)
            bw = min(width, (cx + w / 2) * width) - x1
            bh = min(height, (cy + h / 2) * height) - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CLASSES.index(names[cls]) + 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(bw, 2), round(bh, 2)],
                    "area": round(bw * bh, 2),
                    "iscrowd": 0,
                    "ignore": 0,
                }
            )
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)],
    }
    (out / "labels.json").write_text(json.dumps(coco, indent=1) + "\n", encoding="utf-8")
    return coco


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="YOLO export folder (images/, labels/, classes.txt or data.yaml)")
    parser.add_argument("out", type=Path, help="COCO folder to write (labels.json, images/)")
    args = parser.parse_args(argv)
    try:
        coco = convert(args.export, args.out)
    except ConversionError as err:
        print(f"yolo2coco: {err}", file=sys.stderr)
        return 2
    print(f"{len(coco['images'])} images, {len(coco['annotations'])} boxes -> {args.out / 'labels.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
