"""DualModeEngine: both precision variants of one detector loaded at once, either run per call."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.backends.base import BackendSession, Placement, parse_placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession, OrtOptions, ort_cache_dir
from dpa_perception.core.errors import ConfigError, ManifestError
from dpa_perception.core.input_shape import Rung, ladder_rungs
from dpa_perception.core.manifest import INT8_PAYS, Manifest
from dpa_perception.core.model_spec import ModelSpec, at_scale
from dpa_perception.core.postprocess import DecodeConfig, decode_batch, nms
from dpa_perception.core.preprocess import canvas_hw, letterbox_batch
from dpa_perception.core.types import BACKENDS, MODES, BatchResult, Mode, StageTiming


class LatencyStats:
    """Rolling per-frame inference latency of one mode."""

    def __init__(self, window: int = 512):
        self.per_frame_ms: deque[float] = deque(maxlen=window)
        self.calls = 0
        self.frames = 0

    def add(self, batch_ms: float, batch_size: int) -> None:
        self.calls += 1
        self.frames += batch_size
        self.per_frame_ms.append(batch_ms / max(batch_size, 1))

    def summary(self) -> dict[str, float]:
        # imported here: the pipeline's state module (and its visibility and stats imports) costs a
        # one-shot tool 20 ms of start-up, and only a summary needs its percentiles
        from dpa_perception.core.pipeline_state import percentiles

        v = list(self.per_frame_ms)
        return {
            "calls": self.calls,
            "frames": self.frames,
            **{k: float("nan") if q is None else q
               for k, q in percentiles(v, 6, (("p50_ms", 50), ("p95_ms", 95))).items()},
        }


def _open_session(
    engine_dir: Path, manifest: Manifest, mode: Mode, backend: str, placement: Placement,
    ort_options: OrtOptions, max_batch: int, verified: bool,
) -> BackendSession:
    if backend == "onnxruntime":  # a checksum the manifest load just verified is not computed again
        return OnnxRuntimeSession(manifest.variant_path(engine_dir, mode), placement, ort_options, ort_cache_dir(),
                                  manifest.variant(mode).sha256 if verified else None)  # fmt: skip
    from dpa_perception.backends.tensorrt.session import load_tensorrt_session

    return load_tensorrt_session(engine_dir, manifest, mode, placement, max_batch=max_batch)


def _static(dim: object) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def _declared_problem(session: BackendSession, spec: ModelSpec, dynamic: tuple[bool, bool]) -> str | None:
    """What the variant's declared input/output (ONNX Runtime metadata) says against ``spec`` and the
    manifest's ``(dynamic_batch, dynamic_hw)``."""
    inp, out = getattr(session, "input_shape", None), getattr(session, "output_shape", None)
    if inp is None or out is None:
        return None  # a backend without declared shapes (TensorRT): the probe run below decides
    if session.input_name != spec.input_name:
        return f"its input is {session.input_name!r}, the manifest's description says {spec.input_name!r}"
    if len(inp) != 4 or _static(inp[1]) not in (None, 3):
        return f"its input {list(inp)} is not an NCHW image with 3 channels"
    if (dynamic[0] and _static(inp[0])) or (dynamic[1] and (_static(inp[2]) or _static(inp[3]))):
        return (f"its input {list(inp)} has static dims the manifest calls dynamic "
                f"(dynamic_batch {str(dynamic[0]).lower()}, dynamic_hw {str(dynamic[1]).lower()})")
    want_in = (None, 3, *spec.input_hw)
    expected = spec.output_shape(1)
    for got, want in [*zip(inp[2:], want_in[2:]), *zip(out[1:], expected[1:])]:
        if _static(got) is not None and got != want:
            return (f"it declares input {list(inp)} and output {list(out)}, the manifest's {spec.family} "
                    f"description gives input {spec.input_hw[0]}x{spec.input_hw[1]} and output {list(expected)}")
    if len(out) != 3:
        return f"its output {list(out)} has rank {len(out)}, a detector's has 3"
    return None


def check_variant(session: BackendSession, spec: ModelSpec, where: str, dynamic: tuple[bool, bool] = (False, False),
                  hw: tuple[int, int] | None = None) -> None:
    """:class:`ManifestError` (one line) when the loaded variant is not the model the manifest describes:
    its declared input/output disagree with the description, or one blank frame does not give the output
    shape its family, class and anchor counts imply. The frame is at the description's input size unless
    ``hw`` names another one the variant takes (with dynamic H/W on ONNX Runtime the engine checks one
    stride square: the same check of layout and class count at a tenth of the cost, which a one-shot
    tool such as dpa-detect waits for before its first detection)."""
    problem = _declared_problem(session, spec, dynamic)
    h, w = hw or spec.input_hw
    if problem is None:
        try:
            out = np.asarray(session.run(np.full((1, 3, h, w), spec.pad_value * spec.scale, np.float32)))
        except Exception as exc:  # the backend's own error types
            problem = f"it does not run at input size {h}x{w} ({' '.join(str(exc).split())[:200]})"
        else:
            want = spec.output_shape(1, (h, w))
            if tuple(out.shape) != want:
                problem = (f"its output is {list(out.shape)} at {h}x{w}, the manifest's {spec.family} description "
                           f"({spec.num_classes} classes, {spec.num_anchors} anchors at {spec.input_hw[0]}x"
                           f"{spec.input_hw[1]}) gives {list(want)}")
    if problem is not None:
        raise ManifestError(f"{where}: {problem}: the manifest does not describe this model; rebuild with dpa-build")


class DualModeEngine:
    """Holds the INT8 and the high-precision variant of one detector; ``infer`` runs either.

    Built from an engine folder written by ``dpa-build``: manifest, file checksums and the model
    description's checksum verified (a manifest without one, from an older dpa-build, is refused),
    and each loaded variant checked against the description (declared shapes, one blank frame).
    Pre-processing, inference and post-processing are timed per call and per-mode latency
    statistics are kept for the precision governor.
    """

    def __init__(
        self,
        engine_dir: str | Path,
        *,
        backend: str = "onnxruntime",
        placements: dict[str, str] | None = None,
        ort_options: OrtOptions | None = None,
        decode: DecodeConfig | None = None,
        max_batch: int = 8,
        verify: bool = True,
        gpu_fallback: bool = True,
        modes: Sequence[Mode] = MODES,
    ):
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if max_batch < 1:
            raise ConfigError("max_batch must be at least 1")
        if not modes or any(m not in MODES for m in modes):
            raise ConfigError(f"modes must be some of {', '.join(MODES)}, not {list(modes)!r}")
        self.engine_dir = Path(engine_dir)
        # the ONNX variant files are checked only where they run: the TensorRT backend loads engines
        # built from them, each checked against its own sha256 and its source's (the TensorRT key)
        verified = verify and backend == "onnxruntime"
        self.manifest = Manifest.load(self.engine_dir, verify=verified,
                                      require_spec_sha256=True)
        self.spec = self.manifest.model.spec
        self.backend = backend
        self.intra_op_threads = (ort_options or OrtOptions()).intra_op_threads  # what inference_workers 0 divides by
        self.max_batch = max_batch
        self.dynamic_batch = self.manifest.model.dynamic_batch
        self.dynamic_hw = self.manifest.model.dynamic_hw
        self.decode = decode or DecodeConfig()
        self.decode.validate()
        default_place = "cpu" if backend == "onnxruntime" else "gpu"
        placements = placements or {}
        self.placements = {m: parse_placement(placements.get(m, default_place), gpu_fallback) for m in MODES}
        self.sessions: dict[Mode, BackendSession] = {}
        try:  # both variants (the node, the replay); a tool that runs one mode (dpa-detect) loads only it
            for m in modes:
                self.sessions[m] = _open_session(
                    self.engine_dir, self.manifest, m, backend, self.placements[m],
                    ort_options or OrtOptions(), max_batch, verified,
                )
                small = (self.spec.max_stride,) * 2 if self.dynamic_hw and backend == "onnxruntime" else None
                check_variant(self.sessions[m], self.spec, f"{self.engine_dir}: variant {m!r}",
                              (self.dynamic_batch, self.dynamic_hw), small)
        except Exception:
            self.close()
            raise
        self.stats: dict[Mode, LatencyStats] = {m: LatencyStats() for m in MODES}
        self._local = threading.local()  # per-thread input buffers (letterbox_batch fills them in place)
        # Per-variant score calibration measured by dpa-build on the ONNX Runtime variants it
        # built; a TensorRT engine is a different build and is not calibrated here.
        self.score_offsets: dict[Mode, float] = {
            m: self.manifest.variants[m].score_offset if backend == "onnxruntime" else 0.0
            for m in MODES
        }

        self.int8_pays, self.int8_note = self._int8_verdict()

    def _int8_verdict(self) -> tuple[bool, str]:
        """Whether ``auto`` may use INT8 (the manifest's verdict, measured where it runs: ONNX Runtime on
        the CPU) and the line /diagnostics shows. Not judged (TensorRT, a GPU, an older folder): allowed."""
        if self.backend != "onnxruntime" or any(p.device != "cpu" for p in self.placements.values()):
            return True, "INT8 speed-up judged for ONNX Runtime on the CPU only; not judged here"
        verdict, note = self.manifest.int8_verdict()
        if verdict is None or verdict == INT8_PAYS:
            return True, note
        return False, f"{note}: auto runs high precision"

    @property
    def model_sha256(self) -> str:
        return self.manifest.model.sha256

    def supports(self, input_shape: str) -> bool:
        """Whether the engine can run the given input shape policy."""
        return input_shape == "square" or (input_shape == "rect" and self.dynamic_hw)

    def ladder_rungs(self, input_shape: str) -> tuple[Rung, ...]:
        """The reduced input scales dpa-build measured for ``input_shape`` (largest first): none without
        dynamic H/W or on a DLA (static shapes), or from a folder built before the ladder."""
        if not self.dynamic_hw or any(p.device == "dla" for p in self.placements.values()):
            return ()
        return ladder_rungs(self.manifest.sections.get("rect"), input_shape)

    def infer(self, frames: Sequence[np.ndarray], mode: Mode, input_shape: str = "square",
              scale: float = 1.0) -> BatchResult:
        """Detect objects in ``frames`` (BGR uint8, any sizes) with the ``mode`` variant, letterboxed for the
        model's input size times ``scale`` (below 1: a rung of the shape ladder; needs dynamic H/W)."""
        if mode not in self.sessions:
            raise ConfigError(f"mode must be int8 or high, not {mode!r}" if mode not in MODES else
                              f"mode {mode!r} is not loaded (this engine loaded {', '.join(self.sessions)})")
        if not self.supports(input_shape):
            raise ConfigError(
                f"input shape {input_shape!r} needs spatially dynamic variants; this engine's are fixed at "
                f"{self.spec.input_hw[0]}x{self.spec.input_hw[1]}"
            )
        if scale != 1.0 and not self.dynamic_hw:
            raise ConfigError(f"input scale {scale:g} needs spatially dynamic variants")
        if not frames:
            return BatchResult([], mode)
        t0 = time.perf_counter()
        spec = self.spec if scale == 1.0 else at_scale(self.spec, scale)
        canvas = canvas_hw([f.shape[:2] for f in frames], spec, input_shape)
        batch, infos = letterbox_batch(frames, spec, canvas, self._input_buffer(len(frames), canvas))
        t1 = time.perf_counter()
        session = self.sessions[mode]
        chunk = self.max_batch if self.dynamic_batch else 1
        if len(frames) <= chunk:  # one call: its output as it is (no copy), into a kept buffer where the backend can
            output = session.run_reusing(batch) if isinstance(session, OnnxRuntimeSession) else session.run(batch)
        else:
            output = np.concatenate([session.run(batch[i : i + chunk]) for i in range(0, len(frames), chunk)])
        t2 = time.perf_counter()
        dets = decode_batch(output, spec, canvas, infos, self.decode, self.score_offsets[mode])
        t3 = time.perf_counter()
        timing = StageTiming((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        self.stats[mode].add(timing.inference_ms, len(frames))
        return BatchResult(dets, mode, timing, canvas)

    def _input_buffer(self, n: int, canvas: tuple[int, int]) -> np.ndarray:
        """The input tensor of ``n`` frames on ``canvas``, kept per thread (several inference workers)."""
        bufs: dict[tuple[int, int, int], np.ndarray] = self._local.__dict__.setdefault("inputs", {})
        key = (n, *canvas)
        if key not in bufs:
            if len(bufs) >= 16:  # bounded: batch sizes x canvases seen recently
                bufs.clear()
            bufs[key] = np.empty((n, 3, *canvas), np.float32)
        return bufs[key]

    def warmup(self, runs: int = 3, input_shape: str = "square") -> None:
        """Run each variant once unmeasured (lazy allocations), then ``runs`` measured times.

        The measured calls stay in :attr:`stats`, so the precision governor starts from this
        machine's real latencies instead of guesses.
        """
        # a blank frame has no detections: OpenCV's NMS would first run (and initialise) on a real frame
        nms(np.array([[0, 0, 10, 10], [1, 1, 11, 11]], np.float32), np.array([0.9, 0.8], np.float32),
            np.zeros(2, np.int64), 0.5, False)
        self.warm_thread(input_shape)
        blank = self._warm_frames(input_shape)[0]  # the model's own size, as the governor's seed
        self.stats = {m: LatencyStats() for m in MODES}
        for _ in range(runs):
            for m in self.sessions:
                self.infer([blank], m, input_shape)

    def warm_thread(self, input_shape: str = "square") -> None:
        """One blank frame per loaded variant on the calling thread: ONNX Runtime's per-thread scratch
        and this thread's buffers are set up before a camera frame waits on them (an inference
        worker calls it when it starts; measured: the first call on a new thread took 3-4x longer)."""
        for blank in self._warm_frames(input_shape):
            for m in list(self.sessions):
                self.infer([blank], m, input_shape)
                for rung in self.ladder_rungs(input_shape):  # a rung's first call must not land on a late frame
                    self.infer([blank], m, input_shape, rung.scale)

    def _warm_frames(self, input_shape: str) -> list[np.ndarray]:
        """Blank frames whose canvases a camera will use: the model's own size, and under rect the
        16:9 canvas of most road cameras (each new canvas is a slow first call for ONNX Runtime)."""
        h, w = self.spec.input_hw
        frames = [np.full((h, w, 3), 114, np.uint8)]
        if input_shape == "rect":
            frames.append(np.full((w * 9 // 16, w, 3), 114, np.uint8))
        return frames

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model_sha256": self.model_sha256,
            "family": self.spec.family,
            "input_hw": list(self.spec.input_hw),
            "variants": {m: s.describe() for m, s in self.sessions.items()},
            "int8": self.int8_note,
        }

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()
        self.sessions.clear()
