"""What a TensorRT engine was built for, and whether it may run here.

Pure Python (no TensorRT import at module level) so every decision around TensorRT is tested on
CPU-only CI:

* :class:`EngineKey` - model sha256, the sha256 of the ONNX variant it was built from, variant,
  precision, TensorRT version, GPU compute capability, DLA core and the input shape profile.
  ``key.digest()`` is a stable short hash that goes into the engine file name.
* :func:`expected_key` - the key an engine must have to run a variant on a placement here.
* :func:`compare` / :func:`check_engine_entry` - a stale, foreign, missing or corrupt engine is
  refused with a :class:`~dpa_perception.core.errors.BackendError` that says what differs and how
  to rebuild, never a crash inside TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpa_perception.backends.base import Placement
from dpa_perception.backends.tensorrt.features import detect_features
from dpa_perception.backends.tensorrt.plan import VariantPlan, plan_variant
from dpa_perception.backends.tensorrt.probe import MachineInfo
from dpa_perception.backends.tensorrt.profiles import ShapeProfile, make_profile
from dpa_perception.core.errors import BackendError
from dpa_perception.core.manifest import Manifest, sha256_file

KEY_FORMAT_VERSION = 1
DIGEST_LENGTH = 12
_ENGINE_FILE_RE = re.compile(r"^(int8|high)_[0-9a-f]{" + str(DIGEST_LENGTH) + r"}\.engine$")


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



def expected_key(
    manifest: Manifest,
    variant: str,
    placement: Placement,
    *,
    max_batch: int,
    machine: MachineInfo,
    features_trt: Any,
) -> EngineKey:
    """The key an engine must have to run ``variant`` on ``placement`` on this machine."""
    plan = plan_variant(detect_features(features_trt), variant, placement)
    source = manifest.variants.get(plan.source)
    if source is None:
        raise BackendError(f"manifest lacks the {plan.source!r} variant needed to check TensorRT engines")
    model = manifest.model
    profile = make_profile(
        model.input_hw,
        max_batch=model.engine_max_batch(max_batch),
        dynamic_batch=model.dynamic_batch,
        dynamic_hw=model.dynamic_hw,
        placement=placement,
    )
    return EngineKey.for_plan(plan, machine, model_sha256=model.sha256, source_sha256=source.sha256,
                              input_name=model.input_name, profile=profile)
