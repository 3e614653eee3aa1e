"""Train the camera model with PyTorch (a GPU if there is one), then hand it to Keras/TFLite.

    python -m models.train.torch_train --synth DIR [DIR ...] --real REALCAMS_TRAIN \\
        --weights mobilenet_v2.pth --out run/ --seconds 300 [--seed 0]
    /work/tfvenv/bin/python -m models.train.torch_train --to-keras run/torch_cams.pt run/keras.weights.h5

``--weights``: the .pth of ``python -m models.train.weights`` or the float16 .npz it writes with
``--npz``.  ``--synth`` may be left out (real photos only, e.g. your own labelled rides).

The same data pipeline as ``train.py`` (``data.py``: synthetic tiles, real photos cut as the
detector cuts them, augmentation, CenterNet targets), in DataLoader workers. Checkpoints are
written every minute, so a run stopped by its time limit still leaves weights.

Reproducibility: ``--seed`` fixes the initialisation and every data worker's random stream.  A
``--seconds`` budget ends after however many steps the machine managed, with the LR schedule
spread over the wall clock; ``--steps N`` ends at step N with the schedule spread over the steps
(``--seconds`` then only a safety limit).  GPU (cuDNN, bf16) kernels are not bit-deterministic,
so two GPU runs agree closely, not exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np


def _dataset(synth: list[Path], real: Path | None, size: int, real_frac: float, seed: int) -> object:
    import torch

    from models.train.data import RealTiles, augment, encode, load_coco, synth_sample

    records = [r for root in synth for r in load_coco(root)]

    class Tiles(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        def __iter__(self):  # type: ignore[no-untyped-def]
            info = torch.utils.data.get_worker_info()
            # one stream per worker, fixed by --seed (the shipped run also mixed in the wall clock)
            rng = np.random.default_rng([seed, info.id if info else 0])
            reals = RealTiles(real) if real else None
            while True:
                if reals is not None and (rng.random() < real_frac or not records):
                    tile, tg = reals.sample(rng)
                else:
                    tile, tg = synth_sample(records[int(rng.integers(len(records)))])
                tile, tg = augment(tile, tg, rng, size)
                hm, mask, ltrb, bw = encode(tg, size)
                yield (
                    torch.from_numpy(np.array(tile)).permute(2, 0, 1),
                    torch.from_numpy(hm).permute(2, 0, 1),
                    torch.from_numpy(mask).permute(2, 0, 1),
                    torch.from_numpy(ltrb).permute(2, 0, 1),
                    torch.from_numpy(bw).permute(2, 0, 1),
                )

    return Tiles(), len(records)


def train(args: argparse.Namespace) -> None:
    import torch

    from models.train.torch_net import CamsNet, box_loss, focal_loss, load_imagenet

    torch.manual_seed(args.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    model = CamsNet()
    load_imagenet(model, args.weights)
    model.to(dev).train()
    data, n_synth = _dataset(args.synth, args.real, args.size, args.real_frac, args.seed)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=args.bs,
        num_workers=args.workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    log = (args.out / "torch_log.jsonl").open("a")
    print(
        json.dumps({"device": str(dev), "synth_tiles": n_synth, **{k: str(v) for k, v in vars(args).items()}}),
        flush=True,
    )
    t0 = t_save = time.time()
    step = 0
    sums = np.zeros(2)
    for batch in loader:
        el = time.time() - t0
        if el >= args.seconds or (args.steps and step >= args.steps):
            break
        # the LR schedule runs over --steps when given (reproducible), else over the time budget
        frac = step / args.steps if args.steps else el / args.seconds
        lr = min(1.0, (step + 1) / 200) * (args.lr * 0.5 * (1 + math.cos(math.pi * frac)) + 1e-5)
        for g in opt.param_groups:
            g["lr"] = lr
        x, hm, mask, ltrb, bw = (t.to(dev, non_blocking=True) for t in batch)
        x = x.float().div_(255.0)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits, box = model(x)
        lh, lb = focal_loss(logits, hm, mask), box_loss(box, ltrb, bw)
        loss = lh + 2.0 * lb
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if step % 25 == 0:
            sums += (float(lh.detach()), float(lb.detach()))
        step += 1
        if step % 200 == 0:
            rec = {"step": step, "t": round(el, 1), "hm": round(sums[0] / 8, 4), "box": round(sums[1] / 8, 4), "lr": lr}
            sums[:] = 0
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
        if time.time() - t_save > 60:
            torch.save(model.state_dict(), args.out / "torch_cams.pt")
            t_save = time.time()
    torch.save(model.state_dict(), args.out / "torch_cams.pt")
    summary = {"steps": step, "seconds": round(time.time() - t0, 1), "samples": step * args.bs}
    print(json.dumps(summary), flush=True)
    (args.out / "torch_summary.json").write_text(json.dumps(summary) + "\n")


def to_keras(pt: Path, out: Path) -> None:
    """torch state dict -> Keras training-model weights that ``export.py --weights`` reads."""
    import torch

    from models.train import net
    from models.train.torch_net import to_keras as copy

    state = torch.load(str(pt), map_location="cpu", weights_only=True)
    model = net.build(None)
    net_norm = model.get_layer("imagenet_norm")
    from models.train.backbone import set_imagenet_norm

    set_imagenet_norm(net_norm)
    print(f"set {copy(state, model)} layers", flush=True)
    model.save_weights(str(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synth", type=Path, nargs="*", default=[])
    ap.add_argument("--real", type=Path, default=None, help="realcams/train (never val)")
    ap.add_argument("--weights", type=Path, help="torchvision MobileNetV2 ImageNet weights (.pth or .npz)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--steps", type=int, default=0, help="stop at this step; LR schedule over steps (0: time)")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--real-frac", type=float, default=0.25)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="torch init and data-worker streams (default 0)")
    ap.add_argument("--to-keras", type=Path, nargs=2, metavar=("PT", "H5"), help="convert and exit")
    args = ap.parse_args()
    if args.to_keras:
        to_keras(*args.to_keras)
        return
    if args.weights is None or args.out is None:
        ap.error("--weights and --out are needed to train")
    if not args.synth and args.real is None:
        ap.error("give --synth, --real or both")
    train(args)


if __name__ == "__main__":
    main()
