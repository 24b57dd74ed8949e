"""Train the demo detector on rendered frames and export it to ONNX (needs PyTorch; dev only).

    python -m dpa_perception.demo.train --out dpa_perception/demo/assets

Reproducible: the frames come from :func:`dpa_perception.demo.scene.sample` with scene seeds
``TRAIN_SEED_BASE + data_seed * 1_000_000 + i`` (evaluation uses another range), and torch is
seeded with ``--seed``.  The defaults (4000 frames, 15 epochs, batch 16, 2 threads) are the
full recipe, about 45 minutes on 2 CPU cores (rendering about 4 minutes, then about 0.6 s per
step); ``assets/training_record.json`` records exactly how the shipped model was trained.  An
ONNX export, the record and the curves are written after every epoch, so an interrupted run
still leaves a usable model.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dpa_perception.core.model_spec import ModelSpec, anchors_for
from dpa_perception.core.postprocess import DecodeConfig, decode_batch
from dpa_perception.core.preprocess import LetterboxInfo, letterbox_batch
from dpa_perception.demo.evaluate import mean_ap
from dpa_perception.demo.model_torch import STRIDES, DemoDetector, ExportWrapper, count_parameters, grids
from dpa_perception.demo.scene import COCO_TO_DEMO, DEMO_CLASSES, sample

TRAIN_SEED_BASE = 1_000_000_000
VAL_SEED_BASE = 1_500_000_000
INPUT_HW = (288, 512)  # 640x360 frames scaled by 0.8: no padding, two-wheelers stay above one stride-8 cell


def spec_for(hw: tuple[int, int] = INPUT_HW) -> ModelSpec:
    return ModelSpec(
        family="yolox", input_name="images", output_name="output", input_hw=hw,
        num_classes=len(DEMO_CLASSES), num_anchors=anchors_for(hw, STRIDES), channel_order="bgr",
        scale=1.0 / 255.0, pad_value=114.0, letterbox="top_left", strides=STRIDES, size_rounding="floor",
        class_names=DEMO_CLASSES,
    )


def render_set(seed_base: int, n: int, spec: ModelSpec, weather: str | None = None, log=None,
               two_wheelers: float = 1.0):
    """``n`` frames letterboxed to the model input (uint8 NCHW), boxes in canvas px, demo class ids."""
    images = np.empty((n, 3, *spec.input_hw), np.uint8)
    targets = []
    raw_spec = replace(spec, scale=1.0)  # keep 0..255 here; the model input is scaled by 1/255 when fed
    t0 = time.time()
    for i in range(n):
        img, labels, _, _ = sample(seed_base + i, weather, two_wheelers=two_wheelers)
        batch, infos = letterbox_batch([img], raw_spec, spec.input_hw)
        images[i] = batch[0].astype(np.uint8)
        b = labels.boxes * infos[0].ratio
        c = np.array([COCO_TO_DEMO[int(k)] for k in labels.class_ids], np.int64)
        targets.append(np.concatenate([b, c[:, None].astype(np.float32)], 1) if len(c) else np.zeros((0, 5), np.float32))
        if log and (i + 1) % 500 == 0:
            log(f"rendered {i + 1}/{n} frames ({time.time() - t0:.0f} s)")
    return images, targets


# ---------------------------------------------------------------- loss


def _giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area_a + area_b - inter + 1e-7
    iou = inter / union
    clt = torch.min(a[:, :2], b[:, :2])
    crb = torch.max(a[:, 2:], b[:, 2:])
    carea = (crb - clt).prod(1) + 1e-7
    return iou - (carea - union) / carea


LEVEL_RANGES = {8: (0.0, 64.0), 16: (32.0, 160.0), 32: (96.0, 1e9)}


def assign(gt: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """Index of the ground truth each anchor learns (-1: background).

    Centre prior: an anchor is positive for a box whose size suits its stride when its cell
    centre lies within ``clamp(box half-size, 1.0 s, 1.5 s)`` of the box centre on each axis
    (FCOS-style centre sampling: even a box smaller than a cell gets the 2x2 to 3x3 cells
    around its centre, not a single one); ties go to the smallest box.
    """
    a = grid.shape[0]
    if len(gt) == 0:
        return torch.full((a,), -1, dtype=torch.long)
    centre = (grid + 0.5) * stride  # (A, 2)
    s = stride[:, 0]
    gc = (gt[:, :2] + gt[:, 2:4]) / 2  # (N, 2)
    gwh = (gt[:, 2:4] - gt[:, :2]).clamp(min=1.0)
    size = gwh.max(1).values
    lo = torch.tensor([LEVEL_RANGES[int(v)][0] for v in STRIDES])
    hi = torch.tensor([LEVEL_RANGES[int(v)][1] for v in STRIDES])
    level = torch.zeros_like(s, dtype=torch.long)
    for i, v in enumerate(STRIDES):
        level[s == v] = i
    ok_level = (size[None, :] >= lo[level][:, None]) & (size[None, :] < hi[level][:, None])  # (A, N)
    rad = torch.minimum(torch.maximum(gwh[None] / 2, 1.0 * s[:, None, None]), 1.5 * s[:, None, None])
    d = (centre[:, None, :] - gc[None]).abs()
    inside = (d <= rad).all(2) & ok_level
    area = gwh.prod(1)[None].expand(a, -1)
    area = torch.where(inside, area, torch.full_like(area, float("inf")))
    best = area.argmin(1)
    best[~inside.any(1)] = -1
    return best


def detection_loss(raw: torch.Tensor, targets: list[torch.Tensor], grid: torch.Tensor, stride: torch.Tensor,
                   num_classes: int) -> tuple[torch.Tensor, dict[str, float]]:
    obj_t = torch.zeros(raw.shape[:2])
    box_p, box_t, cls_p, cls_t = [], [], [], []
    for b, gt in enumerate(targets):
        idx = assign(gt, grid, stride)
        pos = idx >= 0
        if not pos.any():
            continue
        obj_t[b, pos] = 1.0
        r = raw[b, pos]
        g, s = grid[pos], stride[pos]
        xy = (r[:, :2] + g) * s
        wh = torch.exp(r[:, 2:4].clamp(max=8.0)) * s
        box_p.append(torch.cat([xy - wh / 2, xy + wh / 2], 1))
        box_t.append(gt[idx[pos], :4])
        cls_p.append(r[:, 5:])
        cls_t.append(F.one_hot(gt[idx[pos], 4].long(), num_classes).float())
    nfg = max(1.0, float(obj_t.sum()))
    l_obj = F.binary_cross_entropy_with_logits(raw[..., 4], obj_t, reduction="sum") / nfg
    if box_p:
        bp, bt = torch.cat(box_p), torch.cat(box_t)
        l_box = (1.0 - _giou(bp, bt)).sum() / nfg
        l_cls = F.binary_cross_entropy_with_logits(torch.cat(cls_p), torch.cat(cls_t), reduction="sum") / nfg
    else:
        l_box = l_cls = raw.sum() * 0.0
    loss = 5.0 * l_box + l_obj + l_cls
    return loss, {"box": l_box.item(), "obj": l_obj.item(), "cls": l_cls.item()}


# ---------------------------------------------------------------- evaluation during training


@torch.no_grad()
def predict(model: DemoDetector, images: np.ndarray, spec: ModelSpec, batch: int = 32):
    model.eval()
    wrapper = ExportWrapper(model)
    outs = [wrapper(torch.from_numpy(images[i:i + batch]).float() / 255.0).numpy() for i in range(0, len(images), batch)]
    out = np.concatenate(outs)
    infos = [LetterboxInfo(1.0, 0.0, 0.0, spec.input_hw)] * len(out)  # boxes stay in canvas pixels
    return decode_batch(out, spec, spec.input_hw, infos, DecodeConfig(score_threshold=0.01, nms_iou=0.5))


# ---------------------------------------------------------------- training


def augment(x: torch.Tensor, targets: list[torch.Tensor], gen: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random horizontal flip and brightness / contrast jitter (pad rows stay at the bottom)."""
    w = x.shape[3]
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    out = []
    for b, t in enumerate(targets):
        if flip[b] and len(t):
            t = t.clone()
            t[:, [0, 2]] = w - t[:, [2, 0]]
        out.append(t)
    gain = 1.0 + 0.25 * (torch.rand(x.shape[0], 1, 1, 1, generator=gen) - 0.5)
    bias = 20.0 * (torch.rand(x.shape[0], 1, 1, 1, generator=gen) - 0.5)
    return (x * gain + bias).clamp(0, 255), out


def export_onnx(model: DemoDetector, path: Path, hw: tuple[int, int] = INPUT_HW) -> None:
    model.eval()
    wrapper = ExportWrapper(model)
    dummy = torch.zeros(1, 3, *hw)
    torch.onnx.export(
        wrapper, (dummy,), str(path), input_names=["images"], output_names=["output"], opset_version=17,
        dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}}, do_constant_folding=True, dynamo=False,
    )
    # the exporter leaves the anchor and channel dims of the output symbolic: pin them
    import onnx

    m = onnx.load(str(path))
    dims = m.graph.output[0].type.tensor_type.shape.dim
    spec = spec_for(hw)
    for d, v in zip(list(dims)[1:], (spec.num_anchors, 5 + spec.num_classes)):
        d.ClearField("dim_param")
        d.dim_value = v
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def write_yaml(path: Path, spec: ModelSpec) -> None:
    names = ", ".join(spec.class_names)
    path.write_text(
        "# Description of demo_detector.onnx for the dpa_perception YOLOX adapter.\n"
        "# Detection class ids 0..5 are indexes into class_names; COCO ids: person 0, bicycle 1,\n"
        "# car 2, motorcycle 3, bus 5, truck 7.\n"
        "family: yolox\n"
        "channel_order: bgr\n"
        f"scale: {spec.scale!r}\n"
        "pad_value: 114.0\n"
        "letterbox: top_left\n"
        "size_rounding: floor\n"
        f"strides: [{', '.join(str(s) for s in spec.strides)}]\n"
        f"input_hw: [{spec.input_hw[0]}, {spec.input_hw[1]}]\n"
        f"class_names: [{names}]\n"
    )


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    steps = [h["step"] for h in history if "loss" in h]
    for key in ("loss", "box", "obj", "cls"):
        ax[0].plot(steps, [h[key] for h in history if "loss" in h], label=key)
    ax[0].set_xlabel("step")
    ax[0].set_yscale("log")
    ax[0].set_title("training loss (smoothed)")
    ax[0].legend()
    ev = [h for h in history if "val_map" in h]
    ax[1].plot([h["epoch"] for h in ev], [h["val_map"] for h in ev], "o-", label="val mAP@0.5 (all weather)")
    ax[1].plot([h["epoch"] for h in ev], [h["val_map_clear"] for h in ev], "s-", label="val mAP@0.5 (clear)")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylim(0, 1)
    ax[1].grid(alpha=0.3)
    ax[1].legend()
    ax[1].set_title("validation (torch, FP32)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def validate(model: DemoDetector, val, spec: ModelSpec) -> tuple[float, float]:
    images, targets, conds = val
    dets = predict(model, images, spec)
    gts = [(t[:, :4], t[:, 4].astype(np.int64)) for t in targets]
    all_map = mean_ap(dets, gts, len(spec.class_names))["map"]
    clear = [i for i, c in enumerate(conds) if c == "clear"]
    clear_map = mean_ap([dets[i] for i in clear], [gts[i] for i in clear], len(spec.class_names))["map"]
    return all_map, clear_map


def train(a: argparse.Namespace) -> dict:
    def log(msg: str) -> None:
        print(f"[train {time.time() - t_start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    t_start = time.time()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    spec = spec_for()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    base = TRAIN_SEED_BASE + a.data_seed * 1_000_000
    log(f"rendering {a.frames} training frames (scene seeds {base}..{base + a.frames - 1})")
    images, targets = render_set(base, a.frames, spec, log=log, two_wheelers=a.two_wheelers)
    vb = VAL_SEED_BASE + a.data_seed * 1_000_000
    conds = ["clear", "fog", "rain", "night"]
    vi, vt, vc = [], [], []
    for k, c in enumerate(conds):
        ii, tt = render_set(vb + k * 100_000, a.val_frames // 4, spec, weather=c)
        vi.append(ii)
        vt += tt
        vc += [c] * len(tt)
    val = (np.concatenate(vi), vt, vc)
    t_render = time.time() - t_start
    log(f"rendered in {t_render:.0f} s")

    model = DemoDetector(len(DEMO_CLASSES))
    n_params = count_parameters(model)
    log(f"model: {n_params} parameters")
    grid, stride = grids(spec.input_hw)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=5e-4)
    steps_per_epoch = a.frames // a.batch
    total = steps_per_epoch * a.epochs
    warm = min(300, total // 10)

    def lr_at(step: int) -> float:
        if step < warm:
            return a.lr * (step + 1) / warm
        return a.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm))))

    gen = torch.Generator().manual_seed(a.seed)
    history: list[dict] = []
    step = 0
    smooth: dict[str, float] = {}
    best = -1.0
    for epoch in range(1, a.epochs + 1):
        model.train()
        order = torch.randperm(a.frames, generator=gen).numpy()
        t_ep = time.time()
        for i in range(steps_per_epoch):
            idx = order[i * a.batch:(i + 1) * a.batch]
            x = torch.from_numpy(images[idx]).float()
            tg = [torch.from_numpy(targets[j]) for j in idx]
            x, tg = augment(x, tg, gen)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            raw = model(x / 255.0)
            loss, parts = detection_loss(raw, tg, grid, stride, len(DEMO_CLASSES))
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {step}")
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            parts["loss"] = loss.item()
            for key, value in parts.items():
                smooth[key] = value if key not in smooth else 0.95 * smooth[key] + 0.05 * value
            step += 1
            if step % 50 == 0:
                history.append({"step": step, **{k: round(v, 4) for k, v in smooth.items()}})
                log(f"epoch {epoch} step {step}/{total} loss {smooth['loss']:.3f} (box {smooth['box']:.3f} "
                    f"obj {smooth['obj']:.3f} cls {smooth['cls']:.3f}) lr {lr_at(step):.2e} "
                    f"{(time.time() - t_ep) / (i + 1) * 1000:.0f} ms/step")
            if a.max_steps and step >= a.max_steps:
                break
        m_all, m_clear = validate(model, val, spec)
        history.append({"epoch": epoch, "step": step, "val_map": round(m_all, 4), "val_map_clear": round(m_clear, 4)})
        log(f"epoch {epoch}: val mAP@0.5 all {m_all:.3f} clear {m_clear:.3f}")
        if a.max_steps and step >= a.max_steps:
            break
        torch.save(model.state_dict(), out / "demo_detector.pt") if a.keep_checkpoint else None
        # export every epoch so a long run that is stopped still leaves a usable model
        if m_all >= best:
            best = m_all
        export_onnx(model, out / "demo_detector.onnx")
        write_yaml(out / "demo_detector.yaml", spec)
        _write_record(out, a, n_params, t_start, t_render, step, epoch, m_all, m_clear, history)
        plot_curves(history, out / "training_curves.png")
    export_onnx(model, out / "demo_detector.onnx")
    write_yaml(out / "demo_detector.yaml", spec)
    plot_curves(history, out / "training_curves.png")
    last = [h for h in history if "val_map" in h][-1]
    rec = _write_record(out, a, n_params, t_start, t_render, step, last["epoch"], last["val_map"],
                        last["val_map_clear"], history)
    log(f"done in {time.time() - t_start:.0f} s: {out / 'demo_detector.onnx'}")
    return rec


def _write_record(out: Path, a, n_params, t_start, t_render, step, epoch, m_all, m_clear, history) -> dict:
    rec = {
        "command": "python -m dpa_perception.demo.train " + " ".join(a.argv),
        "settings": {k: v for k, v in vars(a).items() if k not in ("argv", "out")},
        "data": {
            "train_scene_seeds": [TRAIN_SEED_BASE + a.data_seed * 1_000_000,
                                  TRAIN_SEED_BASE + a.data_seed * 1_000_000 + a.frames - 1],
            "val_scene_seed_base": VAL_SEED_BASE + a.data_seed * 1_000_000,
            "weather_mix": "clear 40 %, fog 20 %, rain 20 %, night 20 % (scene.sample)",
            "two_wheelers": a.two_wheelers,
            "frame_size": [640, 360], "input_hw": list(INPUT_HW),
        },
        "parameters": n_params,
        "epochs_completed": epoch,
        "steps": step,
        "render_seconds": round(t_render, 1),
        "wall_seconds": round(time.time() - t_start, 1),
        "torch": torch.__version__, "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "threads": a.threads,
        "val_map50_all_weather": round(m_all, 4),
        "val_map50_clear": round(m_clear, 4),
        "history": history,
    }
    (out / "training_record.json").write_text(json.dumps(rec, indent=1))
    return rec


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dpa_perception.demo.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="dpa_perception/demo/assets")
    p.add_argument("--frames", type=int, default=4000, help="training frames rendered once (640x360)")
    p.add_argument("--val-frames", type=int, default=200)
    p.add_argument("--two-wheelers", type=float, default=2.0,
                   help="bicycles and motorcycles per training scene, times the scene's own mix (validation keeps 1)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0, help="torch seed (initialisation, order, augmentation)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all epochs)")
    p.add_argument("--keep-checkpoint", action="store_true")
    a = p.parse_args(argv)
    a.argv = list(argv) if argv is not None else sys.argv[1:]
    return a


def main(argv: Sequence[str] | None = None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
