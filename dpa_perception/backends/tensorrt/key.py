"""What a TensorRT engine was built for, and whether it may run here.

Pure Python (no TensorRT import at module level) so every decision around TensorRT is tested on
CPU-only CI:

* :class:`EngineKey` - model sha256, the sha256 of the ONNX variant it was built from, variant,
  precision, TensorRT version, GPU compute capability, DLA core and the input shape profile.
  ``key.digest()`` is a stable short hash that goes into the engine file name.
* :func:`compare` / :func:`check_engine_entry` - a stale, foreign, missing or corrupt engine is
  refused with a :class:`~dpa_perception.core.errors.BackendError` that says what differs and how
  to rebuild, never a crash inside TensorRT.
* :func:`detect_features` / :func:`plan_variant` - the TensorRT 10 (weakly typed, builder
  precision flags) vs TensorRT 11 (strongly typed only) build-plan choice, made by feature
  detection on the ``tensorrt`` module (``hasattr``), never by comparing version strings.
* :func:`make_profile` - optimisation profiles for batch and rectangular input shapes; static for
  DLA (DLA does not support dynamic dimensions).
* :func:`probe_machine` - the current TensorRT version and compute capability, with injectable
  probes (cuda-python, the CUDA driver through ctypes, torch, nvidia-smi).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpa_perception.backends.base import Placement, parse_placement
from dpa_perception.core.errors import BackendError, ConfigError
from dpa_perception.core.manifest import Manifest, sha256_file

KEY_FORMAT_VERSION = 1
DIGEST_LENGTH = 12
VARIANTS: tuple[str, ...] = ("int8", "high")
# Which build-folder ONNX each TensorRT variant is built from (manifest "variants" names).
SOURCE_VARIANT: dict[str, str] = {"int8": "int8_trt", "high": "high"}
_ENGINE_FILE_RE = re.compile(r"^(int8|high)_[0-9a-f]{" + str(DIGEST_LENGTH) + r"}\.engine$")


# --------------------------------------------------------------------------------------------
# Shape profiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeProfile:
    """min / opt / max input shape (NCHW) of one TensorRT optimisation profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)) or not self.min:
            raise ConfigError(f"profile shapes differ in rank: {self.min} {self.opt} {self.max}")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if lo < 1 or not (lo <= mid <= hi):
                raise ConfigError(
                    f"profile needs 1 <= min <= opt <= max per dimension, got "
                    f"min {list(self.min)}, opt {list(self.opt)}, max {list(self.max)}"
                )

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    @property
    def max_batch(self) -> int:
        return self.max[0]

    def covers(self, shape: Sequence[int]) -> bool:
        """Whether a concrete input shape lies inside min..max."""
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max)
        )

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> ShapeProfile:
        try:
            return ShapeProfile(
                tuple(int(v) for v in d["min"]),
                tuple(int(v) for v in d["opt"]),
                tuple(int(v) for v in d["max"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"malformed shape profile {d!r}: {exc}") from exc

    def describe(self) -> str:
        def fmt(s: tuple[int, ...]) -> str:
            return "x".join(str(v) for v in s)

        if self.is_static:
            return f"static {fmt(self.min)}"
        return f"{fmt(self.min)} .. {fmt(self.opt)} .. {fmt(self.max)}"


def round_up(value: int, multiple: int) -> int:
    return ((int(value) + multiple - 1) // multiple) * multiple


def make_profile(
    input_hw: Sequence[int],
    *,
    max_batch: int,
    opt_batch: int | None = None,
    dynamic_batch: bool = True,
    dynamic_hw: bool = False,
    placement: Placement | None = None,
    channels: int = 3,
    stride: int = 32,
    max_aspect: int = 4,
) -> ShapeProfile:
    """The optimisation profile of one engine.

    * batch: ``1 .. opt_batch (default max_batch) .. max_batch`` when the model's batch is dynamic.
    * H, W: the model's ``input_hw`` as opt and max. With ``dynamic_hw`` the minimum of each side is
      ``input side / max_aspect`` rounded up to the stride, so every "rect" letterbox shape (long side
      = the model side, short side a stride multiple, aspect up to ``max_aspect``:1) and the square
      shape are inside the profile, while the tuner still optimises for the square shape.
    * DLA does not support dynamic dimensions (TensorRT "DLA Supported Layers and Restrictions":
      profile min, opt and max must be equal), so a DLA placement gets the static shape
      ``max_batch x C x H x W``; the session pads smaller batches.
    """
    if len(input_hw) != 2:
        raise ConfigError(f"input_hw must be [height, width], got {list(input_hw)}")
    h, w = int(input_hw[0]), int(input_hw[1])
    if h < 1 or w < 1:
        raise ConfigError(f"input_hw must be positive, got {list(input_hw)}")
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    opt = max_batch if opt_batch is None else int(opt_batch)
    if not 1 <= opt <= max_batch:
        raise ConfigError(f"opt_batch must be in 1..max_batch ({max_batch}), got {opt_batch}")
    if not dynamic_batch and max_batch != 1:
        raise ConfigError(
            f"the model's batch dimension is static (1) but max_batch is {max_batch}: "
            "rebuild the build folder with a symbolic batch"
        )
    full = (max_batch, channels, h, w)
    if placement is not None and placement.device == "dla":
        return ShapeProfile(full, full, full)
    if dynamic_hw:
        min_h = min(h, max(stride, round_up(-(-h // max_aspect), stride)))
        min_w = min(w, max(stride, round_up(-(-w // max_aspect), stride)))
    else:
        min_h, min_w = h, w
    min_b = 1 if dynamic_batch else max_batch
    return ShapeProfile((min_b, channels, min_h, min_w), (opt, channels, h, w), full)


def rect_shape(
    image_hw: Sequence[int], input_hw: Sequence[int], stride: int = 32
) -> tuple[int, int]:
    """The letterbox input shape of an image under the "rect" policy (long side = model side)."""
    ih, iw = int(image_hw[0]), int(image_hw[1])
    h, w = int(input_hw[0]), int(input_hw[1])
    r = min(h / ih, w / iw)
    return (min(h, round_up(max(1, round(ih * r)), stride)), min(w, round_up(max(1, round(iw * r)), stride)))


def run_batch_size(profile: ShapeProfile, n: int) -> int:
    """The batch size an engine is run with for ``n`` frames (static engines are padded)."""
    if n < 1:
        raise BackendError(f"batch of {n} frames")
    if n > profile.max_batch:
        raise BackendError(
            f"batch of {n} frames exceeds the engine's maximum batch {profile.max_batch}: "
            "rebuild with a larger --max-batch or lower the node's batch size"
        )
    return profile.max_batch if profile.is_static else max(n, profile.min[0])


# --------------------------------------------------------------------------------------------
# Build plan: TensorRT 10 (weak typing) vs TensorRT 11 (strong typing only)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrtFeatures:
    """What the installed ``tensorrt`` module offers, found by attribute checks only."""

    version: str
    has_fp16_flag: bool
    has_int8_flag: bool
    has_gpu_fallback_flag: bool
    has_strongly_typed_flag: bool
    has_explicit_batch_flag: bool

    @property
    def weakly_typed(self) -> bool:
        """TensorRT 10.x: precision builder flags exist, so the builder may pick FP16/INT8 kernels."""
        return self.has_fp16_flag and self.has_int8_flag


def detect_features(trt: Any) -> TrtFeatures:
    """Feature-detect a ``tensorrt`` module (or a fake with the same attribute layout)."""
    bf = getattr(trt, "BuilderFlag", None)
    nf = getattr(trt, "NetworkDefinitionCreationFlag", None)
    return TrtFeatures(
        version=str(getattr(trt, "__version__", "unknown")),
        has_fp16_flag=hasattr(bf, "FP16"),
        has_int8_flag=hasattr(bf, "INT8"),
        has_gpu_fallback_flag=hasattr(bf, "GPU_FALLBACK"),
        has_strongly_typed_flag=hasattr(nf, "STRONGLY_TYPED"),
        has_explicit_batch_flag=hasattr(nf, "EXPLICIT_BATCH"),
    )


@dataclass(frozen=True)
class VariantPlan:
    """How one variant is built on this TensorRT."""

    variant: str  # "int8" | "high"
    source: str  # manifest variant it is built from: "int8_trt" | "high"
    fp16_onnx: bool  # build from an FP16-typed copy of the source (strongly typed high variant)
    strongly_typed: bool
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag names
    builder_flags: tuple[str, ...]  # BuilderFlag names
    precision: str  # what the engine computes in, e.g. "int8+fp16", "int8+fp32", "fp16"
    placement: Placement = field(default_factory=lambda: Placement("gpu"))

    def describe(self) -> str:
        typing_ = "strongly typed" if self.strongly_typed else "weakly typed"
        flags = ", ".join(self.builder_flags) or "no builder precision flags"
        src = f"{self.source}.onnx" + (" converted to FP16" if self.fp16_onnx else "")
        return f"{self.variant}: {self.precision} on {self.placement} ({typing_}, {flags}; from {src})"


def plan_variant(features: TrtFeatures, variant: str, placement: Placement) -> VariantPlan:
    """Choose network flags, builder flags and source ONNX for one variant.

    TensorRT 10.x (BuilderFlag.FP16 and .INT8 exist): a weakly typed network; the INT8 engine is
    built from the explicitly quantized ``int8_trt.onnx`` with INT8 + FP16 enabled so layers left
    outside Q/DQ may use FP16; the high engine from ``high.onnx`` with FP16.
    TensorRT 11.x (no precision flags, strongly typed always): the INT8 engine from the same Q/DQ
    ONNX (layers outside Q/DQ compute in the ONNX's FP32), the high engine from an FP16-typed copy
    of ``high.onnx`` with FP32 I/O. STRONGLY_TYPED is requested when the flag exists (ignored by 11).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown TensorRT variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    if placement.device not in ("gpu", "dla"):
        raise ConfigError(
            f"variant {variant}: placement {placement} cannot run TensorRT; use gpu or dla:N"
        )
    builder_flags: list[str] = []
    network_flags: list[str] = []
    if features.weakly_typed:
        strongly_typed = False
        fp16_onnx = False
        if variant == "int8":
            builder_flags += ["INT8", "FP16"]
            precision = "int8+fp16"
        else:
            builder_flags.append("FP16")
            precision = "fp16"
    else:
        strongly_typed = True
        if features.has_strongly_typed_flag:
            network_flags.append("STRONGLY_TYPED")
        fp16_onnx = variant == "high"
        precision = "int8+fp32" if variant == "int8" else "fp16"
    if placement.device == "dla" and placement.gpu_fallback:
        if not features.has_gpu_fallback_flag:
            raise BackendError(
                f"variant {variant}: placement {placement} with GPU fallback, but this TensorRT "
                f"({features.version}) has no BuilderFlag.GPU_FALLBACK"
            )
        builder_flags.append("GPU_FALLBACK")
    return VariantPlan(
        variant=variant,
        source=SOURCE_VARIANT[variant],
        fp16_onnx=fp16_onnx,
        strongly_typed=strongly_typed,
        network_flags=tuple(network_flags),
        builder_flags=tuple(builder_flags),
        precision=precision,
        placement=placement,
    )


def parse_placement_plan(text: str, gpu_fallback: bool = True) -> dict[str, Placement]:
    """Parse ``"int8=dla:0,high=gpu"`` into per-variant placements (missing variants: gpu)."""
    plan: dict[str, Placement] = {v: Placement("gpu") for v in VARIANTS}
    seen: set[str] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, where = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in VARIANTS:
            raise ConfigError(
                f"placement plan entry {part!r} is not VARIANT=PLACEMENT with VARIANT in "
                f"{', '.join(VARIANTS)} (for example int8=dla:0,high=gpu)"
            )
        if name in seen:
            raise ConfigError(f"placement plan names variant {name!r} twice")
        seen.add(name)
        plan[name] = parse_placement(where, gpu_fallback)
    return plan


def validate_placements(
    placements: Mapping[str, Placement], num_dla_cores: int | None
) -> dict[str, Placement]:
    """Check a placement plan against the machine; fill missing variants with gpu."""
    out: dict[str, Placement] = {}
    for name in placements:
        if name not in VARIANTS:
            raise ConfigError(f"placement given for unknown variant {name!r}")
    for v in VARIANTS:
        p = placements.get(v, Placement("gpu"))
        if p.device == "cpu":
            raise ConfigError(f"variant {v}: placement cpu is not a TensorRT device; use gpu or dla:N")
        if (
            p.device == "dla"
            and num_dla_cores is not None
            and not 0 <= p.dla_core < num_dla_cores
        ):
            have = "no DLA cores" if num_dla_cores == 0 else f"DLA cores 0..{num_dla_cores - 1}"
            raise ConfigError(f"variant {v}: placement {p} but this machine has {have}")
        out[v] = p
    return out


# --------------------------------------------------------------------------------------------
# Engine keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on."""

    model_sha256: str
    source_sha256: str
    variant: str
    precision: str
    trt_version: str
    compute_capability: str
    dla_core: int
    input_name: str
    profile: ShapeProfile

    @staticmethod
    def for_plan(
        plan: VariantPlan, machine: MachineInfo, *, model_sha256: str, source_sha256: str, input_name: str,
        profile: ShapeProfile,
    ) -> EngineKey:
        """The key of ``plan`` built (or to be run) on ``machine``."""
        return EngineKey(
            model_sha256=model_sha256,
            source_sha256=source_sha256,
            variant=plan.variant,
            precision=plan.precision,
            trt_version=machine.trt_version,
            compute_capability=machine.compute_capability,
            dla_core=plan.placement.dla_core if plan.placement.device == "dla" else -1,
            input_name=input_name,
            profile=profile,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_format": KEY_FORMAT_VERSION,
            "model_sha256": self.model_sha256,
            "source_sha256": self.source_sha256,
            "variant": self.variant,
            "precision": self.precision,
            "trt_version": self.trt_version,
            "compute_capability": self.compute_capability,
            "dla_core": int(self.dla_core),
            "input_name": self.input_name,
            "profile": self.profile.to_dict(),
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> EngineKey:
        try:
            if int(d.get("key_format", KEY_FORMAT_VERSION)) != KEY_FORMAT_VERSION:
                raise BackendError(
                    f"engine key format {d.get('key_format')} is not {KEY_FORMAT_VERSION}"
                )
            return EngineKey(
                model_sha256=str(d["model_sha256"]),
                source_sha256=str(d["source_sha256"]),
                variant=str(d["variant"]),
                precision=str(d["precision"]),
                trt_version=str(d["trt_version"]),
                compute_capability=str(d["compute_capability"]),
                dla_core=int(d["dla_core"]),
                input_name=str(d["input_name"]),
                profile=ShapeProfile.from_dict(d["profile"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"malformed engine key {dict(d)!r}: {exc}") from exc

    def digest(self) -> str:
        """Stable short hash: sha256 of the canonical JSON of :meth:`to_dict`."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:DIGEST_LENGTH]

    def file_name(self) -> str:
        return f"{self.variant}_{self.digest()}.engine"

    @property
    def placement_text(self) -> str:
        return "gpu" if self.dla_core < 0 else f"dla:{self.dla_core}"


def is_engine_file_name(name: str) -> bool:
    return _ENGINE_FILE_RE.match(name) is not None


def _short(sha: str) -> str:
    return sha[:12] + "…" if len(sha) > 12 else sha


def compare(expected: EngineKey, found: EngineKey) -> list[str]:
    """Human-readable differences between the key this machine needs and an engine's key.

    The profile is compared by coverage: an engine whose profile covers the expected one (same
    rank, min <= expected min, max >= expected max) is acceptable; a static (DLA) engine needs
    the same C, H, W and at least the expected batch (smaller batches are padded).
    """
    diffs: list[str] = []
    if found.trt_version != expected.trt_version:
        diffs.append(
            f"TensorRT version: engine built with {found.trt_version}, this machine has "
            f"{expected.trt_version}"
        )
    if found.compute_capability != expected.compute_capability:
        diffs.append(
            f"GPU compute capability: engine built for {found.compute_capability}, this machine "
            f"has {expected.compute_capability}"
        )
    if found.variant != expected.variant:
        diffs.append(f"variant: engine is {found.variant}, {expected.variant} was asked for")
    if found.precision != expected.precision:
        diffs.append(
            f"precision: engine computes in {found.precision}, {expected.precision} was expected"
        )
    if found.dla_core != expected.dla_core:
        diffs.append(
            f"placement: engine built for {found.placement_text}, {expected.placement_text} "
            "was asked for"
        )
    if found.model_sha256 != expected.model_sha256:
        diffs.append(
            f"model: engine built from model sha256 {_short(found.model_sha256)}, the build "
            f"folder's model is {_short(expected.model_sha256)}"
        )
    if found.source_sha256 != expected.source_sha256:
        diffs.append(
            f"source ONNX: engine built from sha256 {_short(found.source_sha256)}, the build "
            f"folder's file is {_short(expected.source_sha256)}"
        )
    if found.input_name != expected.input_name:
        diffs.append(
            f"input: engine input is {found.input_name!r}, the model's is {expected.input_name!r}"
        )
    fp, ep = found.profile, expected.profile
    if fp.is_static and len(fp.max) == len(ep.max):
        # static (DLA) engines run padded batches: same C, H, W and enough batch
        profile_ok = fp.max[1:] == ep.max[1:] and fp.max[0] >= ep.max[0]
    else:
        profile_ok = len(fp.min) == len(ep.min) and fp.covers(ep.min) and fp.covers(ep.max)
    if not profile_ok:
        diffs.append(
            f"input shapes: engine profile {fp.describe()}, needed {ep.describe()}"
        )
    return diffs


def refusal_message(
    engine_name: str, expected: EngineKey, found: EngineKey, diffs: list[str], rebuild_hint: str
) -> str:
    """One line saying what differs, led by the environment (TensorRT version / GPU)."""
    env_changed = (
        found.trt_version != expected.trt_version
        or found.compute_capability != expected.compute_capability
    )
    if env_changed:
        head = (
            f"engine {engine_name} was built for TensorRT {found.trt_version} on compute "
            f"capability {found.compute_capability}, this machine has TensorRT "
            f"{expected.trt_version} on {expected.compute_capability}"
        )
        rest = [d for d in diffs if not d.startswith(("TensorRT version", "GPU compute"))]
        msg = head + ("; " + "; ".join(rest) if rest else "")
    else:
        msg = f"engine {engine_name} does not match this node ({'; '.join(diffs)})"
    return f"{msg}: rebuild with {rebuild_hint}"


def rebuild_command(engine_dir: Path | str, manifest: Manifest | None = None) -> str:
    model = (manifest.model.source if manifest is not None else "") or "MODEL"
    return f"`dpa-build {model} --backend tensorrt --out {engine_dir}`"


def check_engine_entry(
    engine_dir: Path,
    entry: Mapping[str, Any] | None,
    expected: EngineKey,
    *,
    rebuild_hint: str,
    verify_sha256: bool = True,
) -> Path:
    """Return the engine path if ``entry`` may run here; else raise a :class:`BackendError`.

    Refuses: a missing entry or file, a file whose sha256 differs from the manifest (corrupt or
    replaced), a key whose recorded digest does not match (manifest edited by hand), and any key
    difference reported by :func:`compare` (TensorRT / GPU, variant, precision, placement, model,
    source ONNX, input shapes).
    """
    variant = expected.variant
    if not entry:
        raise BackendError(
            f"no TensorRT engine for variant {variant!r} in {engine_dir}/manifest.json: "
            f"build one with {rebuild_hint}"
        )
    name = str(entry.get("file", ""))
    if not name or Path(name).name != name:
        raise BackendError(
            f"TensorRT entry for variant {variant!r} has no plain file name ({name!r}): "
            f"rebuild with {rebuild_hint}"
        )
    path = Path(engine_dir) / name
    if not path.is_file():
        raise BackendError(
            f"engine {name} listed in {engine_dir}/manifest.json is missing: rebuild with "
            f"{rebuild_hint}"
        )
    if verify_sha256:
        want = str(entry.get("sha256", ""))
        got = sha256_file(path)
        if got != want:
            raise BackendError(
                f"engine {name} is corrupt or was replaced (sha256 {_short(got)}, manifest says "
                f"{_short(want) or 'nothing'}): rebuild with {rebuild_hint}"
            )
    raw_key = entry.get("key")
    if not isinstance(raw_key, Mapping):
        raise BackendError(f"engine {name} has no key in the manifest: rebuild with {rebuild_hint}")
    found = EngineKey.from_dict(raw_key)
    recorded = str(entry.get("digest", ""))
    if recorded != found.digest():
        raise BackendError(
            f"engine {name}: its manifest key does not hash to its recorded digest "
            f"({recorded or 'none'} vs {found.digest()}), the manifest was edited: rebuild with "
            f"{rebuild_hint}"
        )
    diffs = compare(expected, found)
    if diffs:
        raise BackendError(refusal_message(name, expected, found, diffs, rebuild_hint))
    return path


# --------------------------------------------------------------------------------------------
# This machine: TensorRT version and compute capability
# --------------------------------------------------------------------------------------------

CCProbe = Callable[[int], "str | None"]


def format_cc(major: int, minor: int) -> str:
    return f"{int(major)}.{int(minor)}"


def probe_cc_cuda_python(device: int = 0) -> str | None:
    """Compute capability through cuda-python's runtime bindings (12.x and 13.x layouts)."""
    try:
        try:
            from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        except ImportError:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
    except ImportError:
        return None
    attr = cudart.cudaDeviceAttr
    err, major = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    err, minor = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    return format_cc(major, minor)


_CU_ATTR_CC_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR (cuda.h)
_CU_ATTR_CC_MINOR = 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR


def probe_cc_libcuda(device: int = 0) -> str | None:
    """Compute capability through the CUDA driver library (present wherever a driver is)."""
    lib = None
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return None
    try:
        if lib.cuInit(0) != 0:
            return None
        dev = ctypes.c_int()
        if lib.cuDeviceGet(ctypes.byref(dev), device) != 0:
            return None
        major, minor = ctypes.c_int(), ctypes.c_int()
        if lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev) != 0:
            return None
        if lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev) != 0:
            return None
    except AttributeError:
        return None
    return format_cc(major.value, minor.value)


def probe_cc_torch(device: int = 0) -> str | None:
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return format_cc(major, minor)


def probe_cc_nvidia_smi(device: int = 0) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--id={device}", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"^\s*(\d+)\.(\d+)\s*$", out.stdout or "")
    return format_cc(int(m.group(1)), int(m.group(2))) if out.returncode == 0 and m else None


DEFAULT_CC_PROBES: tuple[CCProbe, ...] = (
    probe_cc_cuda_python,
    probe_cc_libcuda,
    probe_cc_torch,
    probe_cc_nvidia_smi,
)


def current_compute_capability(
    device: int = 0, probes: Iterable[CCProbe] | None = None
) -> str | None:
    """The first answer of the probes (any probe that raises is skipped)."""
    for probe in DEFAULT_CC_PROBES if probes is None else probes:
        try:
            cc = probe(device)
        except Exception:
            cc = None
        if cc:
            return cc
    return None


def import_tensorrt() -> Any:
    """Import the real ``tensorrt`` module or raise :class:`BackendError`.

    A bare namespace package (for example only ``tensorrt-stubs`` installed) imports fine but has
    no ``Builder``: it is treated as "not installed".
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(
            "TensorRT is not installed (import tensorrt failed): install the TensorRT Python "
            "package of your JetPack / CUDA to build or run TensorRT engines"
        ) from exc
    if not hasattr(trt, "Builder") or not getattr(trt, "__version__", None):
        raise BackendError(
            "the importable 'tensorrt' has no Builder (only type stubs are installed?): install "
            "the TensorRT Python package of your JetPack / CUDA"
        )
    return trt


def current_trt_version(trt: Any = None) -> str | None:
    if trt is None:
        try:
            import tensorrt as trt_module
        except ImportError:
            return None
        trt = trt_module
    v = getattr(trt, "__version__", None)
    return str(v) if v else None


@dataclass(frozen=True)
class MachineInfo:
    trt_version: str
    compute_capability: str


def probe_machine(
    trt: Any = None, *, device: int = 0, probes: Iterable[CCProbe] | None = None
) -> MachineInfo:
    """TensorRT version and compute capability of this machine, or a BackendError saying which is missing."""
    version = current_trt_version(trt)
    if version is None:
        raise BackendError(
            "TensorRT is not installed (import tensorrt failed): install the TensorRT Python "
            "package of your JetPack / CUDA, or run the int8/high variants on ONNX Runtime"
        )
    cc = current_compute_capability(device, probes)
    if cc is None:
        raise BackendError(
            "cannot determine the GPU compute capability: no CUDA device answered through "
            "cuda-python, libcuda, torch or nvidia-smi"
        )
    return MachineInfo(version, cc)
