"""``dpa-build``: build an engine folder (high-precision + mixed INT8 variants, manifest, report) offline."""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from dpa_perception import __version__
from dpa_perception.backends.base import Placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession, OrtOptions
from dpa_perception.build import sensitivity as sens
from dpa_perception.build.metrics import Agreement, agreement
from dpa_perception.build.model_detect import detect_spec, load_onnx
from dpa_perception.build.quantize import (
    CALIBRATION_METHODS,
    FrameReader,
    make_dynamic,
    quantize_variant,
    upgrade_opset,
)
from dpa_perception.core.errors import ConfigError, DpaError, ImageError
from dpa_perception.core.image_codec import IMAGE_SUFFIXES, read_image
from dpa_perception.core.manifest import Manifest, ModelEntry, VariantEntry, sha256_file
from dpa_perception.core.model_spec import ModelSpec, anchors_for
from dpa_perception.core.postprocess import DecodeConfig, anchor_scores, decode_batch
from dpa_perception.core.preprocess import canvas_hw, letterbox_batch
from dpa_perception.core.types import Detections

Log = Callable[[str], None]
# Ways to choose the layers kept in high precision (see build_engine_dir); "auto" tries both.
PLANS = ("sensitivity", "prefix")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- calibration frames


def load_frames(source: Path, limit: int, topics: Sequence[str] | None = None) -> list[np.ndarray]:
    """Calibration frames from a folder of images or from a rosbag2 (every ``n``-th image message)."""
    if source.is_dir() and not (source / "metadata.yaml").is_file():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) for calibration")
        step = max(1, len(files) // limit)
        return [read_image(p) for p in files[::step][:limit]]
    from dpa_perception.bags.reader import count_images, iter_images

    total = count_images([source], topics)
    step = max(1, total // limit)
    frames: list[np.ndarray] = []
    for i, msg in enumerate(iter_images([source], topics)):
        if i % step == 0 and len(frames) < limit:
            try:
                frames.append(msg.decode())
            except ImageError as exc:
                _stderr(f"dpa-build: skipping a calibration frame on {msg.topic}: {exc}")
    if not frames:
        raise ConfigError(f"{source}: no decodable image messages for calibration")
    return frames


def split_holdout(frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Calibration and held-out frames.

    With 8 frames or more every 4th frame is held out. With fewer, all frames calibrate and the
    held-out set is made of variations the calibration never saw: each frame mirrored, mirrored
    at 0.8x scale, and mirrored with darker exposure.
    """
    if len(frames) >= 8:
        return [f for i, f in enumerate(frames) if i % 4], frames[::4], "every 4th frame"
    import cv2

    lut = (255.0 * (np.arange(256) / 255.0) ** 1.6).astype(np.uint8)
    held = []
    for f in frames:
        m = np.ascontiguousarray(f[:, ::-1])
        held += [m, cv2.resize(m, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA), cv2.LUT(m, lut)]
    return frames, held, "mirrored, mirrored 0.8x and mirrored darker copies of the calibration frames"


# ---------------------------------------------------------------- evaluation helpers


class Evaluator:
    """Runs a candidate variant on the held-out frames and compares it with the FP32 reference."""

    def __init__(self, spec: ModelSpec, high_path: Path, frames: list[np.ndarray], score_threshold: float = 0.3):
        self.spec = spec
        self.score_threshold = score_threshold
        # decode low so agreement can be measured at thresholds around the operating one
        self.decode = DecodeConfig(score_threshold=max(0.05, score_threshold - 0.15), nms_iou=0.45)
        self.batch, self.infos = letterbox_batch(frames, spec, spec.input_hw)
        self.ref_out = self.run(high_path)
        self.ref_scores = anchor_scores(self.ref_out, spec)
        self.ref_dets = self.detections(self.ref_out)

    def run(self, path: Path) -> np.ndarray:
        s = OnnxRuntimeSession(path, Placement("cpu"), OrtOptions(intra_op_threads=0))
        try:
            return np.concatenate([s.run(self.batch[i : i + 1]) for i in range(len(self.batch))])
        finally:
            s.close()

    def detections(self, out: np.ndarray, score_offset: float = 0.0) -> list[Detections]:
        return decode_batch(out, self.spec, self.spec.input_hw, self.infos, self.decode, score_offset)

    def score_error(self, out: np.ndarray) -> float:
        return sens.score_error(self.ref_scores, anchor_scores(out, self.spec))

    def agreement(self, out: np.ndarray, min_score: float | None = None, score_offset: float = 0.0) -> Agreement:
        total = Agreement()
        thr = self.score_threshold if min_score is None else min_score
        for r, t in zip(self.ref_dets, self.detections(out, score_offset)):
            total += agreement(r, t, iou=0.5, min_score=thr)
        return total

    def best_score_offset(self, out: np.ndarray, step: float = 0.01, limit: float = 0.1) -> tuple[float, Agreement]:
        """The score offset (0..limit) that best aligns this variant's detections with the reference.

        Quantization tends to pull scores down a little everywhere; shifting them back restores
        recall at the operating threshold. Ties go to the smallest offset.
        """
        best = (0.0, self.agreement(out))
        for offset in np.arange(step, limit + 1e-9, step):
            a = self.agreement(out, score_offset=float(offset))
            if a.f1 > best[1].f1 + 1e-9:
                best = (round(float(offset), 3), a)
        return best

    def plan_error(self, out: np.ndarray) -> float:
        """1 - F1 averaged over score thresholds around the operating one.

        At a single threshold the error jumps whenever one borderline detection crosses it;
        the average is a smoother, more monotonic signal for the plan search.
        """
        base = self.score_threshold
        thresholds = [t for t in (base - 0.1, base - 0.05, base, base + 0.05, base + 0.1) if 0.0 < t < 1.0]
        return float(np.mean([1.0 - self.agreement(out, t).f1 for t in thresholds]))


def time_variants(paths: dict[str, Path], batch: np.ndarray, runs: int, options: OrtOptions) -> dict[str, float]:
    """Median per-frame latency of each variant, runs interleaved so drift hits all alike."""
    sessions = {k: OnnxRuntimeSession(p, Placement("cpu"), options) for k, p in paths.items()}
    x = batch[:1]
    times: dict[str, list[float]] = {k: [] for k in paths}
    for s in sessions.values():
        s.run(x)
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(x)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: round(float(np.median(v)), 3) for k, v in times.items()}


def verify_dynamic(path: Path, spec: ModelSpec, frame: np.ndarray) -> tuple[bool, bool]:
    """Check by running it whether ``path`` really accepts other batch sizes and canvas sizes."""
    s = OnnxRuntimeSession(path, Placement("cpu"))
    x, _ = letterbox_batch([frame], spec, spec.input_hw)
    try:
        one = s.run(x)
        two = s.run(np.concatenate([x, x]))
        dyn_batch = two.shape[0] == 2 and np.allclose(two[0], one[0], atol=1e-3) and np.allclose(two[1], one[0], atol=1e-3)
    except Exception:
        dyn_batch = False
    rect = (spec.input_hw[0] // 2 // spec.max_stride * spec.max_stride or spec.max_stride, spec.input_hw[1])
    try:
        xr, _ = letterbox_batch([frame], spec, rect)
        out = s.run(xr)
        rows = out.shape[1] if spec.family == "yolox" else out.shape[2]
        dyn_hw = rows == anchors_for(rect, spec.strides)
    except Exception:
        dyn_hw = False
    s.close()
    return bool(dyn_batch), bool(dyn_hw)


# ---------------------------------------------------------------- report


def write_report(out_dir: Path, units: list[sens.Unit], curve: dict[int, float], max_error: float, title: str) -> None:
    """``precision_report.json`` and ``precision_report.png``: sensitivity along the network, kept units marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out_dir / "precision_report.json").write_text(
        json.dumps({"max_error": max_error, "error_by_kept_count": {str(k): v for k, v in sorted(curve.items())},
                    "units": [u.as_dict() for u in units]}, indent=2) + "\n"
    )
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(13, 7), gridspec_kw={"height_ratios": [3, 1.4]})
    x = np.arange(len(units))
    vals = np.array([u.sensitivity for u in units])
    colors = ["#d62728" if u.kept else ("#9ecae1" if u.depthwise else "#1f77b4") for u in units]
    ax.bar(x, np.nan_to_num(vals), color=colors, width=0.85)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylabel("score error when quantized alone")
    ax.set_title(title)
    step = max(1, len(units) // 25)
    ax.set_xticks(x[::step])
    ax.set_xticklabels([u.name.strip("/").replace("/conv/Conv", "").replace("/Conv", "")[-28:] for u in units][::step],
                       rotation=60, ha="right", fontsize=7)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#d62728", label="kept in high precision"), Patch(color="#1f77b4", label="INT8 conv"),
                       Patch(color="#9ecae1", label="INT8 depthwise conv")], loc="upper right")
    ks = sorted(curve)
    ax2.plot(ks, [curve[k] for k in ks], "o-")
    ax2.axhline(max_error, color="r", ls="--", label=f"max error {max_error}")
    ax2.set_xlabel("units kept in high precision (most sensitive first)")
    ax2.set_ylabel("1 - F1 vs high precision")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "precision_report.png", dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- the build


def build_engine_dir(
    model_path: Path,
    calib_source: Path,
    out_dir: Path,
    *,
    max_error: float = 0.05,
    max_kept_fraction: float = 0.5,
    method: str = "percentile",
    percentile: float = 99.99,
    calib_frames: int = 32,
    topics: Sequence[str] | None = None,
    bench_runs: int = 20,
    plan: str = "auto",
    force: bool = False,
    progress: bool = True,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Build ``out_dir`` from ``model_path``; returns the manifest. See ``dpa-build --help``."""
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"--calibration must be one of {', '.join(CALIBRATION_METHODS)}")
    if plan not in ("auto", *PLANS):
        raise ConfigError(f"--plan must be auto or one of {', '.join(PLANS)}")
    if not 0.0 <= max_error <= 1.0:
        raise ConfigError("--max-error must be within [0, 1]")
    if out_dir.exists() and not force:
        raise ConfigError(f"{out_dir} exists; pass --force to replace it")
    t_start = time.time()
    model = load_onnx(model_path)
    spec = detect_spec(model_path, model)
    log(f"dpa-build: {model_path.name}: {spec.family}, input {spec.input_hw[0]}x{spec.input_hw[1]}, "
        f"{spec.num_classes} classes, {spec.num_anchors} anchors")
    frames = load_frames(calib_source, calib_frames, topics)
    calib, held, held_desc = split_holdout(frames)
    log(f"dpa-build: {len(calib)} calibration frames, held-out: {len(held)} ({held_desc})")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        base = upgrade_opset(model)
        high_path = tmp / "high.onnx"
        dyn_batch = dyn_hw = False
        for spatial in (True, False):
            onnx.save(make_dynamic(base, spatial), str(high_path))
            dyn_batch, dyn_hw = verify_dynamic(high_path, spec, calib[0])
            if dyn_batch and (dyn_hw or not spatial):
                break
        if not dyn_batch:
            warnings.warn("the model's batch dimension cannot be made symbolic; frames run one by one", stacklevel=1)
            onnx.save(base, str(high_path))
            dyn_hw = False
        log(f"dpa-build: dynamic batch: {dyn_batch}, dynamic spatial dims (rect input): {dyn_hw}")

        decode = DecodeConfig(score_threshold=0.3, nms_iou=0.45)
        ev = Evaluator(spec, high_path, held)
        # The plan search scores candidates on the calibration frames as well as the held-out ones:
        # more references make its stop rule less noisy (calibration only sets ranges; measured
        # agreement on calibration frames was no better than on unseen ones).
        ev_select = Evaluator(spec, high_path, calib + held)
        calib_tensor, _ = letterbox_batch(calib, spec, spec.input_hw)
        reader = FrameReader(spec.input_name, calib_tensor)
        cache = tmp / "calibration_cache.json"
        hp = onnx.load(str(high_path))
        all_nodes = sens.quantizable_nodes(hp)
        units = sens.conv_units(hp)

        def quantize(path: Path, target: str, kept: set[str]) -> Path:
            nodes = [n for n in all_nodes if n not in kept]
            quantize_variant(high_path, path, target=target, nodes_to_quantize=nodes, calibration_cache=cache,
                             reader=reader, method=method, percentile=percentile, op_types=None)
            return path

        # 1. calibrate once (cached), 2. sensitivity of each unit quantized alone
        log(f"dpa-build: calibrating ({method}) and probing {len(units)} layers one by one")
        probe = tmp / "probe.onnx"
        for u in tqdm(units, desc="sensitivity", disable=not progress, file=sys.stderr):
            quantize_variant(high_path, probe, target="cpu", nodes_to_quantize=u.nodes, calibration_cache=cache,
                             reader=reader, method=method, percentile=percentile, op_types=None)
            u.sensitivity = ev.score_error(ev.run(probe))
        probe.unlink(missing_ok=True)

        # 3. two ways to keep layers in high precision, each grown until the held-out error is small
        #    enough: the most sensitive layers wherever they are, or a contiguous prefix of the network
        #    (every FP32<->INT8 boundary costs a quantize/dequantize, so scattered layers can cost more
        #    than they save). 4. the faster of the two that meets the error wins: INT8 must pay for itself.
        ranked = sens.rank(units)
        order = [n.name for n in hp.graph.node]
        position = {name: i for i, name in enumerate(order)}
        cap = max(1, int(len(units) * max_kept_fraction))
        candidate = tmp / "candidate.onnx"

        def plan_nodes(strategy: str, k: int) -> set[str]:
            if strategy == "sensitivity":
                return {n for u in ranked[:k] for n in u.nodes}
            limit = units[k].index if k < len(units) else len(order)
            return {n for n in all_nodes if position[n] < limit}

        plans: dict[str, dict[str, Any]] = {}
        for strategy in PLANS if plan == "auto" else (plan,):
            with tqdm(desc=f"{strategy} plan search", disable=not progress, file=sys.stderr) as bar:

                def error_with(k: int, strategy: str = strategy, bar: Any = bar) -> float:
                    bar.update(1)
                    out = ev_select.run(quantize(candidate, "cpu", plan_nodes(strategy, k)))
                    return round(ev_select.plan_error(out), 4)

                k, curve = sens.smallest_sufficient(cap, error_with, max_error)
            path = quantize(tmp / f"int8_{strategy}.onnx", "cpu", plan_nodes(strategy, k))
            plans[strategy] = {"k": k, "curve": curve, "error": curve[k], "path": path}
        timing = time_variants({s: p["path"] for s, p in plans.items()}, calib_tensor, bench_runs, OrtOptions())
        ok = [s for s, p in plans.items() if p["error"] <= max_error] or list(plans)
        chosen = min(ok, key=lambda s: (timing[s], plans[s]["error"]))
        k, curve = plans[chosen]["k"], plans[chosen]["curve"]
        if curve[k] > max_error:
            warnings.warn(f"held-out error {curve[k]:.3f} is still above --max-error {max_error} with {k} units "
                          f"kept (the cap, --max-kept-fraction {max_kept_fraction})", stacklevel=1)
        kept_nodes = plan_nodes(chosen, k)
        for u in units:
            u.kept = u.name in kept_nodes
            if u.kept:
                u.reasons.append("sensitivity" if chosen == "sensitivity" or u in ranked[:k] else "contiguous prefix")
        plan_summary = {s: {"units_kept": p["k"], "selection_error": p["error"], "int8_ms": timing[s]}
                        for s, p in plans.items()}
        speed_note = ", ".join(f"{s}: {p['k']} layers kept, 1-F1 {p['error']:.3f}, {timing[s]:.1f} ms"
                               for s, p in plans.items())
        log(f"dpa-build: plans: {speed_note}; chose {chosen}")
        int8_path = plans[chosen]["path"].replace(tmp / "int8.onnx")
        for p in plans.values():
            p["path"].unlink(missing_ok=True)
        trt_path = quantize(tmp / "int8_trt.onnx", "tensorrt", kept_nodes)
        candidate.unlink(missing_ok=True)

        # 5. score calibration of the INT8 variant, fitted on the selection frames, then measure it all
        score_offset, _ = ev_select.best_score_offset(ev_select.run(int8_path))
        uncalibrated = ev.agreement(ev.run(int8_path))
        final = ev.agreement(ev.run(int8_path), score_offset=score_offset)
        log(f"dpa-build: INT8 score offset {score_offset:+.2f} (held-out F1 {uncalibrated.f1:.3f} -> {final.f1:.3f})")
        latency = time_variants({"high": high_path, "int8": int8_path}, calib_tensor, bench_runs, OrtOptions())
        speedup = latency["high"] / latency["int8"]
        log(f"dpa-build: INT8 vs high on held-out: recall {final.recall:.3f} precision {final.precision:.3f}; "
            f"latency high {latency['high']:.1f} ms, int8 {latency['int8']:.1f} ms ({speedup:.2f}x)")
        if speedup <= 1.0:
            warnings.warn(f"the INT8 variant is NOT faster than high precision on this machine ({speedup:.2f}x)", stacklevel=1)
        rect = _measure_rect(high_path, spec, frames, decode, bench_runs) if dyn_hw else None

        write_report(tmp, units, curve, max_error,
                     f"{model_path.name}: per-layer INT8 sensitivity ({method} calibration, {len(calib)} frames)")
        cache.unlink(missing_ok=True)
        import onnxruntime

        manifest = Manifest(
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            model=ModelEntry.from_spec(spec, source=model_path.name, sha256=sha256_file(model_path),
                                       dynamic_batch=dyn_batch, dynamic_hw=dyn_hw),
            variants={
                "high": VariantEntry("high.onnx", "fp32", sha256_file(high_path)),
                "int8": VariantEntry("int8.onnx", "int8", sha256_file(int8_path), score_offset=score_offset,
                                     details={"activations": "uint8 asymmetric",
                                              "weights": "int8 symmetric per-channel", "target": "cpu"}),
                "int8_trt": VariantEntry("int8_trt.onnx", "int8", sha256_file(trt_path),
                                         details={"activations": "int8 symmetric",
                                                  "weights": "int8 symmetric per-channel", "target": "tensorrt"}),
            },
            sections={
                "calibration": {"method": method, "percentile": percentile if method == "percentile" else None,
                                "frames": len(calib), "source": str(calib_source), "held_out": len(held),
                                "held_out_kind": held_desc},
                "mixed_precision": {
                    "max_error": max_error,
                    "selection_error": curve[k],
                    "selection_frames": "calibration + held-out",
                    "units_total": len(units),
                    "units_kept": sum(u.kept for u in units),
                    "kept_nodes": sorted(kept_nodes),
                    "strategy": chosen,
                    "plans": plan_summary,
                },
                "agreement": {"int8_vs_high_held_out": final.as_dict(),
                              "int8_vs_high_held_out_without_score_offset": uncalibrated.as_dict(),
                              "iou": 0.5, "score_threshold": 0.3,
                              "class_aware": True},
                "latency_ms": {**latency, "speedup": round(speedup, 3), "batch": 1,
                               "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                               "session": "1 intra-op thread, spinning off"},
                "rect": rect,
                "tools": {"dpa_perception": __version__, "onnx": onnx.__version__,
                          "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                          "python": platform.python_version()},
                "build_seconds": round(time.time() - t_start, 1),
            },
        )
        manifest.write(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"dpa-build: wrote {out_dir} in {manifest.sections['build_seconds']:.0f} s")
    return manifest.to_dict()


def _measure_rect(high_path: Path, spec: ModelSpec, frames: list[np.ndarray], decode: DecodeConfig, runs: int) -> dict:
    """Agreement and speed of the rect input shape against square, on the calibration frames."""
    s = OnnxRuntimeSession(high_path, Placement("cpu"), OrtOptions())
    total = Agreement()
    t_sq: list[float] = []
    t_rect: list[float] = []
    for f in frames:
        outs = {}
        for policy, acc in (("square", t_sq), ("rect", t_rect)):
            canvas = canvas_hw([f.shape[:2]], spec, policy)
            x, infos = letterbox_batch([f], spec, canvas)
            s.run(x)
            ts = []
            for _ in range(max(3, runs // 4)):
                t0 = time.perf_counter()
                out = s.run(x)
                ts.append((time.perf_counter() - t0) * 1e3)
            acc.append(float(np.median(ts)))
            outs[policy] = decode_batch(out, spec, canvas, infos, decode)[0]
        total += agreement(outs["square"], outs["rect"])
    s.close()
    sq, rc = float(np.mean(t_sq)), float(np.mean(t_rect))
    return {"agreement_vs_square": total.as_dict(), "square_ms": round(sq, 3), "rect_ms": round(rc, 3),
            "speedup": round(sq / rc, 3), "frames": len(frames)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dpa-build", description=__doc__)
    p.add_argument("model", type=Path, help="ONNX detector (YOLOX or YOLOv8/YOLO11 export)")
    p.add_argument("--calib", type=Path, required=True, help="folder of images or a rosbag2 with image topics")
    p.add_argument("--out", type=Path, required=True, help="engine folder to write")
    p.add_argument("--topics", nargs="*", help="image topics of the calibration bag (default: all)")
    p.add_argument("--calibration", default="percentile", choices=sorted(CALIBRATION_METHODS),
                   help="calibration method (default percentile: MinMax and Entropy measured worse)")
    p.add_argument("--percentile", type=float, default=99.99, help="percentile for the percentile method")
    p.add_argument("--calib-frames", type=int, default=32, help="at most this many calibration frames")
    p.add_argument("--max-error", type=float, default=0.05, help="1-F1 of INT8 against high precision allowed (plan search)")
    p.add_argument("--max-kept-fraction", type=float, default=0.5, help="cap on layers kept in high precision")
    p.add_argument("--bench-runs", type=int, default=20, help="timed runs per variant")
    p.add_argument("--plan", default="auto", choices=("auto", *PLANS),
                   help="high-precision layers: most sensitive ones, a contiguous prefix, or auto (the faster "
                        "of the two that meets --max-error, timed here; force one when building for another target)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                   help="tensorrt: also build TensorRT engines from the folder (run on the target)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.backend == "tensorrt" and (a.out / "manifest.json").is_file() and not a.force:
            from dpa_perception.backends.tensorrt.builder import main as trt_main

            return trt_main([str(a.out)])
        build_engine_dir(a.model, a.calib, a.out, max_error=a.max_error, max_kept_fraction=a.max_kept_fraction,
                         method=a.calibration, percentile=a.percentile, calib_frames=a.calib_frames,
                         topics=a.topics, bench_runs=a.bench_runs, plan=a.plan, force=a.force,
                         progress=not a.no_progress)
        if a.backend == "tensorrt":
            from dpa_perception.backends.tensorrt.builder import main as trt_main

            return trt_main([str(a.out)])
    except DpaError as exc:
        print(f"dpa-build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
