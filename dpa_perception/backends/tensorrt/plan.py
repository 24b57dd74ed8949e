"""Build plans: how each variant is built on this TensorRT, and where it runs.

:func:`plan_variant` chooses network flags, builder flags and the source ONNX: TensorRT 10
(weakly typed, builder precision flags) vs TensorRT 11 (strongly typed only), by feature
detection (:mod:`.features`). :func:`parse_placement_plan` / :func:`validate_placements` read and
check a per-variant placement (gpu, dla:N) against the machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dpa_perception.backends.base import Placement, parse_placement
from dpa_perception.backends.tensorrt.features import TrtFeatures
from dpa_perception.core.errors import BackendError, ConfigError

VARIANTS: tuple[str, ...] = ("int8", "high")
# Which build-folder ONNX each TensorRT variant is built from (manifest "variants" names).
SOURCE_VARIANT: dict[str, str] = {"int8": "int8_trt", "high": "high"}


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

