"""The engine folder build, step by step: prepare the model, calibrate, probe sensitivity, plan the
mixed precision, quantize the variants, fit the score offset, measure, write the manifest, publish.

Everything is written into a hidden temp folder beside ``out_dir``, synced, and swapped in by
renames at the end (:mod:`.publish`), so a failed or interrupted build leaves the old folder (or
nothing) in place, and the next run removes what a killed one left.
"""

from __future__ import annotations

import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from dpa_perception import __version__
from dpa_perception.backends.base import Placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession, OrtOptions, ort_cache_dir
from dpa_perception.build import sensitivity as sens
from dpa_perception.build.calibration import load_frames, split_holdout
from dpa_perception.build.evaluate import AGREEMENT_IOU, NMS_IOU, SCORE_THRESHOLD, Evaluator
from dpa_perception.build.model_detect import detect_spec, load_onnx
from dpa_perception.build.plan import PLAN_CHOICES, PLANS, Layers, Plan, PlanSearch
from dpa_perception.build.prepare import HighVariant, prepare_high
from dpa_perception.build.publish import check_out_dir, hidden_prefix, publish
from dpa_perception.build.quantize import CALIBRATION_METHODS, Calibrated, FrameReader
from dpa_perception.build.rect import describe_ladder, measure_rect
from dpa_perception.build.report import SpeedPanel, write_report
from dpa_perception.build.score_offset import ScoreOffset, fit_score_offset
from dpa_perception.build.throughput import describe_throughput, measure_throughput
from dpa_perception.build.timing import SpeedVerdict, compare_speed
from dpa_perception.core.errors import ConfigError, ImageError, ModelError
from dpa_perception.core.manifest import Manifest, ModelEntry, VariantEntry, sha256_file
from dpa_perception.core.model_spec import ModelSpec
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.core.preprocess import letterbox_batch

Log = Callable[[str], None]
__all__ = ["PLANS", "BuildOptions", "build", "build_engine_dir", "check_references", "staging"]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BuildOptions:
    """How to build; the defaults are ``dpa-build``'s (its argparse defaults come from here)."""

    max_error: float = 0.05  # 1 - F1 of INT8 against high precision allowed (plan search)
    max_kept_fraction: float = 0.5  # cap on the units kept in high precision
    method: str = "percentile"  # calibration method (MinMax and Entropy measured worse)
    percentile: float = 99.99  # for the percentile method
    calib_frames: int = 32  # at most this many calibration frames
    topics: Sequence[str] | None = None  # image topics of a calibration bag (None: all)
    bench_runs: int = 20  # timed runs per variant (per round of the INT8 verdict)
    min_int8_speedup: float = 1.05  # INT8 pays above this speed-up (95 % confidence), else auto keeps high
    plan: str = "auto"  # sensitivity, prefix, or auto (the faster of the two that meets max_error)
    force: bool = False  # replace an existing output folder
    progress: bool = True  # progress bars on stderr

    def validate(self) -> None:
        """:class:`ConfigError` naming the ``dpa-build`` option that is out of range."""
        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(f"--calibration must be one of {', '.join(CALIBRATION_METHODS)}")
        if self.plan not in PLAN_CHOICES:
            raise ConfigError(f"--plan must be auto or one of {', '.join(PLANS)}")
        if not 0.0 <= self.max_error <= 1.0:
            raise ConfigError("--max-error must be within [0, 1]")
        if not 0.0 <= self.max_kept_fraction <= 1.0:
            raise ConfigError("--max-kept-fraction must be within [0, 1]")
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError("--percentile must be within (0, 100]")
        if self.calib_frames < 1:
            raise ConfigError("--calib-frames must be at least 1")
        if self.bench_runs < 1:
            raise ConfigError("--bench-runs must be at least 1")
        if not 0.5 <= self.min_int8_speedup <= 10.0:
            raise ConfigError("--min-int8-speedup must be within [0.5, 10]")


# ---------------------------------------------------------------- steps before the temp folder


@dataclass(frozen=True)
class Frames:
    """The build's frames: all of them, the calibration set and the held-out set."""

    all: list[np.ndarray]
    calib: list[np.ndarray]
    held: list[np.ndarray]
    held_kind: str


def prepare_model(model_path: Path, log: Log) -> tuple[onnx.ModelProto, ModelSpec]:
    """Load the model and work out its spec."""
    model = load_onnx(model_path)
    spec = detect_spec(model_path, model)
    log(f"dpa-build: {model_path.name}: {spec.family}, input {spec.input_hw[0]}x{spec.input_hw[1]}, "
        f"{spec.num_classes} classes, {spec.num_anchors} anchors")  # fmt: skip
    return model, spec


def usable_frames(frames: list[np.ndarray], spec: ModelSpec, source: Path, log: Log) -> list[np.ndarray]:
    """The frames the model's letterbox can take (a 20000x1 strip cannot); the others skipped with a
    line each; :class:`ConfigError` when none is left."""
    usable = []
    for i, frame in enumerate(frames):
        try:
            letterbox_batch([frame], spec, spec.input_hw)
        except ImageError as exc:
            log(f"dpa-build: skipping calibration frame {i + 1} of {source}: {exc}")
            continue
        usable.append(frame)
    if not usable:
        raise ConfigError(f"{source}: none of its {len(frames)} frames fits the model's input "
                          f"{spec.input_hw[0]}x{spec.input_hw[1]}")  # fmt: skip
    return usable


def load_calibration(source: Path, opts: BuildOptions, log: Log, spec: ModelSpec | None = None) -> Frames:
    """The calibration frames and the held-out frames the variants are judged on."""
    frames = load_frames(source, opts.calib_frames, opts.topics)
    if spec is not None:
        frames = usable_frames(frames, spec, source, log)
    calib, held, held_kind = split_holdout(frames)
    log(f"dpa-build: {len(calib)} calibration frames, held-out: {len(held)} ({held_kind})")
    return Frames(frames, calib, held, held_kind)


@contextmanager
def staging(out_dir: Path) -> Iterator[Path]:
    """A hidden temp folder beside ``out_dir``, published over it when the block ends without error
    (:func:`~dpa_perception.build.publish.publish`: synced, then one rename swap) and removed
    (``out_dir`` untouched) when anything, even an interrupt, escapes the block."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=hidden_prefix(out_dir, "tmp"), dir=out_dir.parent))
    try:
        yield tmp
        publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------- steps in the temp folder


@dataclass(frozen=True)
class Job:
    """What one build works from."""

    model_path: Path
    calib_source: Path
    opts: BuildOptions
    spec: ModelSpec
    frames: Frames
    folder: Path
    log: Log
    started: float


@dataclass(frozen=True)
class Calibration:
    """The calibrated quantizer, the network's units and the pre-processed calibration frames."""

    quantizer: Calibrated
    model: onnx.ModelProto  # the high-precision graph
    units: list[sens.Unit]
    tensor: np.ndarray


def calibrate(job: Job, high: HighVariant) -> Calibration:
    """Set up the one calibration pass (run on first use, then cached) and list the quantizable units."""
    tensor, _ = letterbox_batch(job.frames.calib, job.spec, job.spec.input_hw)
    hp = onnx.load(str(high.path))
    quantizer = Calibrated(high.path, job.folder / "calibration_cache.json", FrameReader(job.spec.input_name, tensor),
                           job.opts.method, job.opts.percentile, tuple(sens.quantizable_nodes(hp)))  # fmt: skip
    return Calibration(quantizer, hp, sens.conv_units(hp), tensor)


def probe_sensitivity(job: Job, cal: Calibration, ev: Evaluator) -> None:
    """The score error of each unit quantized alone."""
    job.log(f"dpa-build: calibrating ({job.opts.method}) and probing {len(cal.units)} layers one by one")
    probe = job.folder / "probe.onnx"
    sens.probe(cal.units, lambda u: ev.score_error(ev.run(cal.quantizer.quantize_nodes(probe, u.nodes))),
               job.opts.progress)  # fmt: skip
    probe.unlink(missing_ok=True)


def plan_precision(job: Job, cal: Calibration, ev_select: Evaluator) -> Plan:
    """The mixed-precision plan (see :mod:`dpa_perception.build.plan`), its CPU file as ``int8.onnx``."""
    search = PlanSearch(Layers.of(cal.model, cal.units, cal.quantizer.all_nodes), cal.quantizer, ev_select,
                        job.folder, job.opts.max_error, job.opts.max_kept_fraction, job.opts.progress)  # fmt: skip
    plan = search.run(job.opts.plan, cal.tensor, job.opts.bench_runs, job.log)
    (job.folder / "candidate.onnx").unlink(missing_ok=True)
    return plan


@dataclass(frozen=True)
class Measured:
    """Latency of both variants here (batch 1) and, for models with symbolic H, W, the rect input shape."""

    speed: SpeedVerdict
    rect: dict[str, Any] | None
    throughput: dict[str, Any]  # frames/s by variant, shape, threads and batch (build.throughput)


def measure(job: Job, high: HighVariant, plan: Plan, cal: Calibration, score: ScoreOffset) -> Measured:
    """Whether INT8 pays here (interleaved rounds until sure, :func:`compare_speed`; a warning when it
    does not) and the rect input shape."""
    speed = compare_speed(high.path, plan.int8_path, cal.tensor, job.opts.bench_runs, OrtOptions(),
                          job.opts.min_int8_speedup)  # fmt: skip
    final = score.final
    job.log(f"dpa-build: INT8 vs high on held-out: recall {final.recall:.3f} precision {final.precision:.3f}; "
            f"latency high {speed.high_ms:.1f} ms, int8 {speed.int8_ms:.1f} ms: {speed.describe()}")  # fmt: skip
    if not speed.pays:
        warnings.warn(f"{speed.describe()} on this machine: input_shape aside, precision_mode auto will run "
                      f"high precision only", stacklevel=1)  # fmt: skip
    decode = DecodeConfig(score_threshold=SCORE_THRESHOLD, nms_iou=NMS_IOU)
    rect = measure_rect(high.path, job.spec, job.frames.all, decode, job.opts.bench_runs) if high.dynamic_hw else None
    if rect is not None:
        job.log(f"dpa-build: input shapes (speed-up over full scale, F1 against full-size square): {describe_ladder(rect)}")
    shapes = ("square", "rect") if high.dynamic_hw else ("square",)
    throughput = measure_throughput({"high": high.path, "int8": plan.int8_path}, job.spec, job.frames.all[0], shapes,
                                    high.dynamic_batch)  # fmt: skip
    job.log(f"dpa-build: throughput here: {describe_throughput(throughput)}")
    return Measured(speed, rect, throughput)


@dataclass(frozen=True)
class Built:
    """The files of the folder and what the build measured."""

    high: HighVariant
    plan: Plan
    trt_path: Path
    units: list[sens.Unit]
    score: ScoreOffset
    measured: Measured
    fragile: list[str]  # attention / normalisation nodes kept in high precision (sensitivity.fragile_nodes)


def _variants(built: Built) -> dict[str, VariantEntry]:
    weights = "int8 symmetric per-channel"
    return {
        "high": VariantEntry("high.onnx", "fp32", sha256_file(built.high.path)),
        "int8": VariantEntry("int8.onnx", "int8", sha256_file(built.plan.int8_path), score_offset=built.score.offset,
                             details={"activations": "uint8 asymmetric", "weights": weights, "target": "cpu"}),
        "int8_trt": VariantEntry("int8_trt.onnx", "int8", sha256_file(built.trt_path),
                                 details={"activations": "int8 symmetric", "weights": weights, "target": "tensorrt"}),
    }  # fmt: skip


def _sections(job: Job, built: Built) -> dict[str, Any]:
    import onnxruntime

    opts, plan, m = job.opts, built.plan, built.measured
    return {
        "calibration": {"method": opts.method, "percentile": opts.percentile if opts.method == "percentile" else None,
                        "frames": len(job.frames.calib), "source": str(job.calib_source),
                        "held_out": len(job.frames.held), "held_out_kind": job.frames.held_kind},
        "mixed_precision": {
            "max_error": opts.max_error,
            "selection_error": plan.curve[plan.k],
            "selection_frames": "calibration + held-out",
            "units_total": len(built.units),
            "units_kept": sum(u.kept for u in built.units),
            "kept_nodes": sorted(plan.kept_nodes),
            "fragile_nodes_kept": built.fragile,
            "strategy": plan.strategy,
            "plans": plan.summary,
            "high_ms": plan.high_ms,
        },
        "agreement": {"int8_vs_high_held_out": built.score.final.as_dict(),
                      "int8_vs_high_held_out_without_score_offset": built.score.uncalibrated.as_dict(),
                      "iou": AGREEMENT_IOU, "score_threshold": SCORE_THRESHOLD,
                      "class_aware": True},
        "latency_ms": {**m.speed.as_dict(), "batch": 1,
                       "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                       "session": "1 intra-op thread, spinning off"},
        "rect": m.rect,
        "throughput": m.throughput,
        "tools": {"dpa_perception": __version__, "onnx": onnx.__version__,
                  "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                  "python": platform.python_version()},
        "build_seconds": round(time.time() - job.started, 1),
    }  # fmt: skip


def write_manifest(job: Job, built: Built) -> Manifest:
    """The folder's ``manifest.json``: the model, the variants with their checksums, the build records."""
    manifest = Manifest(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=ModelEntry.from_spec(job.spec, source=job.model_path.name, sha256=sha256_file(job.model_path),
                                   dynamic_batch=built.high.dynamic_batch, dynamic_hw=built.high.dynamic_hw),
        variants=_variants(built),
        sections=_sections(job, built),
    )  # fmt: skip
    manifest.write(job.folder)
    return manifest


def check_references(job: Job, ev: Evaluator) -> None:
    """:class:`ModelError` when the high-precision model is no detector on these frames: no object at
    the build's operating score on any frame, outputs that are not finite, or the same output
    whatever the frame (nothing to calibrate the INT8 variant against, every agreement would be 1.0)."""
    where = f"{job.model_path}"
    n = len(ev.batch)
    if not np.isfinite(ev.ref_out).all():
        raise ModelError(f"{where}: the model's output holds NaN or infinite values on the calibration frames; "
                         f"not a detector dpa-build can quantize")  # fmt: skip
    found = sum(int((d.scores >= SCORE_THRESHOLD).sum()) for d in ev.ref_dets)
    if found == 0:
        raise ModelError(f"{where}: no detections (score >= {SCORE_THRESHOLD}) on any of the {n} calibration "
                         f"frames: not a {job.spec.family} detector, wrong pre-processing in its description, "
                         f"or calibration frames without objects")  # fmt: skip
    if n > 1 and bool((ev.ref_out == ev.ref_out[:1]).all()):
        raise ModelError(f"{where}: the model gives the same output on all {n} calibration frames: its output "
                         f"does not depend on the image, not a detector")  # fmt: skip


def build_into(job: Job, model: onnx.ModelProto) -> Manifest:
    """Every step that writes into the temp folder ``job.folder``."""
    high = prepare_high(model, job.spec, job.frames.calib[0], job.folder, job.log)
    ev = Evaluator(job.spec, high.path, job.frames.held)
    # The plan search scores candidates on the calibration frames as well as the held-out ones:
    # more references make its stop rule less noisy (calibration only sets ranges; measured
    # agreement on calibration frames was no better than on unseen ones).
    ev_select = Evaluator(job.spec, high.path, job.frames.calib + job.frames.held)
    check_references(job, ev_select)
    cal = calibrate(job, high)
    probe_sensitivity(job, cal, ev)
    plan = plan_precision(job, cal, ev_select)
    trt_path = cal.quantizer.quantize_except(job.folder / "int8_trt.onnx", "tensorrt", plan.kept_nodes)
    score = fit_score_offset(plan.int8_path, ev_select, ev, job.log)
    measured = measure(job, high, plan, cal, score)
    agreement = {"recall": score.final.recall, "precision": score.final.precision}
    panel = SpeedPanel(measured.speed.high_ms, measured.speed.int8_ms, measured.speed.as_dict(), plan.summary,
                       plan.high_ms, plan.strategy, agreement)  # fmt: skip
    write_report(job.folder, cal.units, plan.curve, job.opts.max_error,
                 f"{job.model_path.name}: per-layer INT8 sensitivity ({job.opts.method} calibration, "
                 f"{len(job.frames.calib)} frames)", panel)  # fmt: skip
    cal.quantizer.cache.unlink(missing_ok=True)
    for path in (high.path, plan.int8_path):  # the node's first load on this machine finds them optimised
        OnnxRuntimeSession(path, Placement("cpu"), OrtOptions(), ort_cache_dir()).close()
    return write_manifest(job, Built(high, plan, trt_path, cal.units, score, measured,
                                     sorted(sens.fragile_nodes(cal.model))))


# ---------------------------------------------------------------- the build


def build(model_path: Path, calib_source: Path, out_dir: Path, opts: BuildOptions, log: Log = _stderr) -> Manifest:
    """Build ``out_dir`` from ``model_path`` with ``opts``; returns the manifest written. See ``dpa-build --help``."""
    opts.validate()
    out_dir = check_out_dir(out_dir, opts.force, log)  # refusals up front, litter of a killed build cleaned
    for flag, path in (("the model", model_path), ("--calib", calib_source)):
        if out_dir.resolve() in (path.resolve(), *path.resolve().parents):
            raise ConfigError(f"--out {out_dir} holds {flag} {path}: replacing it would delete its own input")
    started = time.time()
    model, spec = prepare_model(model_path, log)
    frames = load_calibration(calib_source, opts, log, spec)
    with staging(out_dir) as folder:
        manifest = build_into(Job(model_path, calib_source, opts, spec, frames, folder, log, started), model)
    log(f"dpa-build: wrote {out_dir} in {manifest.sections['build_seconds']:.0f} s")
    return manifest


def build_engine_dir(model_path: Path, calib_source: Path, out_dir: Path, options: BuildOptions | None = None, *,
                     log: Log = _stderr, **overrides: Any) -> dict[str, Any]:  # fmt: skip
    """:func:`build` with options given as keywords (``BuildOptions`` field names, over ``options``);
    returns the manifest as written on disk."""
    opts = replace(options or BuildOptions(), **overrides)
    return build(model_path, calib_source, out_dir, opts, log).to_dict()
