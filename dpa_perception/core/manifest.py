"""The engine folder's ``manifest.json``: what was built, from what, and checksums to trust it.

:class:`Manifest` is the one type every consumer reads and the one writer (``Manifest.write``)
and reader (``Manifest.load``) of the file. The layout on disk is format version 1, unchanged::

    {"format_version": 1, "created": "...",
     "model": {"source", "sha256", "family", "input_name", "input_hw", "num_classes",
               "num_anchors", "dynamic_batch", "dynamic_hw", "spec": {...ModelSpec...},
               "spec_sha256"},           (sha256 of the canonical spec: ModelSpec.digest)
     "variants": {"high": {"file", "precision", "sha256"},
                  "int8": {"file", "precision", "activations", "weights", "target", "sha256", "score_offset"},
                  "int8_trt": {...}},
     "calibration": ..., "mixed_precision": ..., "agreement": ..., "latency_ms": ..., "rect": ...,
     "tools": ..., "build_seconds": ...,      (build records, kept verbatim in ``sections``)
     "tensorrt": {...}}                       (optional, written by the TensorRT builder)

Every malformed shape is refused with a one-line :class:`ManifestError` naming the field, and so
is a model description edited after the build: ``model.spec_sha256`` (written by dpa-build since
the field was added) must match the spec it covers. A manifest without it (an older dpa-build)
still loads with :meth:`Manifest.load`'s default, but ``require_spec_sha256=True`` (what
:class:`~dpa_perception.inference.engine.DualModeEngine` asks for) refuses it: rebuild with dpa-build.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from dpa_perception.core.atomic_dir import write_file_atomically
from dpa_perception.core.errors import DpaError, ManifestError
from dpa_perception.core.model_spec import ModelSpec

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # dpa-build writes about 10 KB
# latency_ms.int8_verdict: whether the CPU INT8 file pays on the build machine (dpa-build's interleaved
# rounds); precision_mode auto uses INT8 only where it pays
INT8_PAYS, INT8_DOES_NOT_PAY, INT8_UNDECIDED = "pays", "does_not_pay", "undecided"
INT8_VERDICTS = (INT8_PAYS, INT8_DOES_NOT_PAY, INT8_UNDECIDED)
MAX_SCORE_OFFSET = 0.5  # a score offset beyond this would turn every anchor into a detection (or none)
FORMAT_VERSION = 1
# The variant files an ONNX Runtime engine folder must hold; int8_trt is TensorRT's form.
REQUIRED_VARIANTS = ("high", "int8")

# The one place of defaults for fields an older or hand-written manifest may lack. dynamic_batch
# defaults to False, the safe choice: a model whose batch is not known to be symbolic runs frames
# one by one and gets batch-1 TensorRT engines (True would feed it batches it may not accept).
MODEL_DEFAULTS: dict[str, Any] = {"source": "", "dynamic_batch": False, "dynamic_hw": False}
VARIANT_DEFAULTS: dict[str, Any] = {"precision": "", "score_offset": 0.0}

_MODEL_KEYS = ("source", "sha256", "family", "input_name", "input_hw", "num_classes", "num_anchors",
               "dynamic_batch", "dynamic_hw", "spec", "spec_sha256")
_VARIANT_KEYS = ("file", "precision", "sha256", "score_offset")
_TOP_KEYS = ("format_version", "created", "model", "variants", "tensorrt")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, expected_sha256: object, what: str) -> str:
    """Check that ``path`` exists and matches ``expected_sha256``; return the digest.

    Raises :class:`ManifestError` saying which file is missing or changed and how to recover.
    """
    if not path.is_file():
        raise ManifestError(f"{path}: {what} listed in the manifest is missing")
    digest = sha256_file(path)
    if digest != expected_sha256:
        raise ManifestError(
            f"{path}: sha256 {digest[:12]}... does not match the manifest "
            f"({str(expected_sha256)[:12]}...): the file changed or is corrupt; rebuild with dpa-build"
        )
    return digest


# --------------------------------------------------------------------------------------------
# Field readers: each raises ManifestError("<where>: <field> ...") and nothing else
# --------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _object(value: object, where: str, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: {name} must be a JSON object, not {_type_name(value)}")
    return value


def _str(d: Mapping[str, Any], key: str, where: str, name: str, default: str | None = None) -> str:
    if key not in d and default is not None:
        return default
    if key not in d:
        raise ManifestError(f"{where}: {name}.{key} is missing")
    value = d[key]
    if not isinstance(value, str):
        raise ManifestError(f"{where}: {name}.{key} must be a string, not {_type_name(value)}")
    return value


def _int(d: Mapping[str, Any], key: str, where: str, name: str, default: int | None = None) -> int:
    if key not in d and default is not None:
        return default
    if key not in d:
        raise ManifestError(f"{where}: {name}.{key} is missing")
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ManifestError(f"{where}: {name}.{key} must be a positive integer, not {value!r}")
    return value


def _bool(d: Mapping[str, Any], key: str, where: str, name: str, default: bool) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise ManifestError(f"{where}: {name}.{key} must be true or false, not {value!r}")
    return value


def _float(d: Mapping[str, Any], key: str, where: str, name: str, default: float) -> float:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ManifestError(f"{where}: {name}.{key} must be a finite number, not {value!r}")
    return float(value)


def _score_offset(value: float, where: str, name: str) -> float:
    if not -MAX_SCORE_OFFSET <= value <= MAX_SCORE_OFFSET:
        raise ManifestError(f"{where}: {name}.score_offset must be within [-{MAX_SCORE_OFFSET}, {MAX_SCORE_OFFSET}] "
                            f"(dpa-build fits 0 to 0.1), not {value!r}")  # fmt: skip
    return value


def _hw(d: Mapping[str, Any], key: str, where: str, name: str, default: tuple[int, int]) -> tuple[int, int]:
    value = d.get(key, list(default))
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    )
    if not ok:
        raise ManifestError(f"{where}: {name}.{key} must be [height, width] (2 positive integers), not {value!r}")
    return (int(value[0]), int(value[1]))


def _relative_file(value: str, where: str, name: str) -> str:
    """A variant file must be a plain relative path inside the engine folder."""
    posix, win = PurePosixPath(value), PureWindowsPath(value)
    bad = (
        not value.strip() or "\x00" in value or posix.is_absolute() or win.is_absolute() or bool(win.drive)
        or ".." in posix.parts or ".." in win.parts or value.strip() in (".", "./")
    )
    if bad:
        raise ManifestError(f"{where}: {name}.file {value!r} must be a relative path inside the engine folder")
    return value


def _spec(value: object, where: str) -> ModelSpec:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: manifest has no model description (model.spec must be an object, "
                            f"not {_type_name(value)})")
    try:
        return ModelSpec.from_dict(value)
    except (DpaError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"{where}: model.spec: {_one_line(exc)}") from exc


# --------------------------------------------------------------------------------------------
# The types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    """The manifest's ``model``: the source model, its input and whether its dims are symbolic."""

    source: str
    sha256: str
    family: str
    input_name: str
    input_hw: tuple[int, int]
    num_classes: int
    num_anchors: int
    dynamic_batch: bool
    dynamic_hw: bool
    spec: ModelSpec
    spec_sha256: str | None = field(default=None, compare=False)  # ModelSpec.digest(); None: older builds

    @classmethod
    def from_spec(cls, spec: ModelSpec, *, source: str, sha256: str, dynamic_batch: bool, dynamic_hw: bool) -> ModelEntry:
        """The entry of a model described by ``spec`` (family, input and counts come from it)."""
        return cls(source=source, sha256=sha256, family=spec.family, input_name=spec.input_name,
                   input_hw=spec.input_hw, num_classes=spec.num_classes, num_anchors=spec.num_anchors,
                   dynamic_batch=dynamic_batch, dynamic_hw=dynamic_hw, spec=spec, spec_sha256=spec.digest())

    def engine_max_batch(self, max_batch: int) -> int:
        """The largest batch its engines are built and keyed for: ``max_batch``, except that a
        model whose batch dimension is static (dpa-build could not make it symbolic) runs frames
        one by one (DualModeEngine) and gets batch-1 engines whatever ``max_batch`` says."""
        return max_batch if self.dynamic_batch else min(max_batch, 1)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.source,
            "sha256": self.sha256,
            "family": self.family,
            "input_name": self.input_name,
            "input_hw": list(self.input_hw),
            "num_classes": self.num_classes,
            "num_anchors": self.num_anchors,
            "dynamic_batch": self.dynamic_batch,
            "dynamic_hw": self.dynamic_hw,
            "spec": self.spec.to_dict(),
        }
        if self.spec_sha256 is not None:
            d["spec_sha256"] = self.spec_sha256
        return d

    @classmethod
    def from_dict(cls, value: object, where: str) -> ModelEntry:
        """Fields that repeat the spec (family, input, counts) default to it and must agree with it."""
        d = _object(value, where, "model")
        spec = _spec(d.get("spec"), where)
        n = "model"
        entry = cls(
            source=_str(d, "source", where, n, MODEL_DEFAULTS["source"]),
            sha256=_str(d, "sha256", where, n),
            family=_str(d, "family", where, n, spec.family),
            input_name=_str(d, "input_name", where, n, spec.input_name),
            input_hw=_hw(d, "input_hw", where, n, spec.input_hw),
            num_classes=_int(d, "num_classes", where, n, spec.num_classes),
            num_anchors=_int(d, "num_anchors", where, n, spec.num_anchors),
            dynamic_batch=_bool(d, "dynamic_batch", where, n, MODEL_DEFAULTS["dynamic_batch"]),
            dynamic_hw=_bool(d, "dynamic_hw", where, n, MODEL_DEFAULTS["dynamic_hw"]),
            spec=spec,
            spec_sha256=_str(d, "spec_sha256", where, n) if "spec_sha256" in d else None,
        )
        if entry.spec_sha256 is not None and entry.spec_sha256 != spec.digest():
            raise ManifestError(f"{where}: model.spec does not match its checksum model.spec_sha256: the model "
                                f"description was edited after the build; rebuild with dpa-build")
        for key in ("family", "input_name", "input_hw", "num_classes", "num_anchors"):
            if getattr(entry, key) != getattr(spec, key):
                raise ManifestError(f"{where}: model.{key} {getattr(entry, key)!r} differs from model.spec's "
                                    f"{getattr(spec, key)!r}: the manifest was edited; rebuild with dpa-build")
        return entry


@dataclass(frozen=True)
class VariantEntry:
    """One built file of the folder (``variants.<name>``); ``details`` holds the other fields
    (activations, weights, target...) verbatim."""

    file: str
    precision: str
    sha256: str
    score_offset: float = VARIANT_DEFAULTS["score_offset"]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"file": self.file}
        if self.precision:
            d["precision"] = self.precision
        d.update({k: v for k, v in self.details.items() if k not in _VARIANT_KEYS})
        d["sha256"] = self.sha256
        if self.score_offset != 0.0:  # absent means 0.0 (as dpa-build writes the high variant)
            d["score_offset"] = self.score_offset
        return d

    @classmethod
    def from_dict(cls, value: object, where: str, name: str) -> VariantEntry:
        n = f"variants.{name}"
        d = _object(value, where, n)
        return cls(
            file=_relative_file(_str(d, "file", where, n), where, n),
            precision=_str(d, "precision", where, n, VARIANT_DEFAULTS["precision"]),
            sha256=_str(d, "sha256", where, n),
            score_offset=_score_offset(_float(d, "score_offset", where, n, VARIANT_DEFAULTS["score_offset"]), where, n),
            details={k: v for k, v in d.items() if k not in _VARIANT_KEYS},
        )


@dataclass
class Manifest:
    """An engine folder's manifest. ``sections`` keeps the build records (calibration,
    mixed_precision, agreement, latency_ms, rect, tools, build_seconds, any other top-level key)
    verbatim; ``tensorrt`` is the TensorRT builder's section, None until engines are built."""

    model: ModelEntry
    variants: dict[str, VariantEntry]
    created: str = ""
    sections: dict[str, Any] = field(default_factory=dict)
    tensorrt: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Exactly the layout on disk."""
        d: dict[str, Any] = {"format_version": self.format_version}
        if self.created:
            d["created"] = self.created
        d["model"] = self.model.to_dict()
        d["variants"] = {name: v.to_dict() for name, v in self.variants.items()}
        d.update({k: v for k, v in self.sections.items() if k not in _TOP_KEYS})
        if self.tensorrt is not None:
            d["tensorrt"] = self.tensorrt
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Manifest:
        """Validate a decoded manifest; ``where`` (usually the file's path) starts every error."""
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: manifest must be a JSON object, not {_type_name(d)}")
        version = d.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
            raise ManifestError(f"{where}: unsupported manifest format {version!r} (this version reads "
                                f"{FORMAT_VERSION}); rebuild with dpa-build")
        if "model" not in d:
            raise ManifestError(f"{where}: manifest has no model description")
        variants = _object(d.get("variants"), where, "variants")
        tensorrt = d.get("tensorrt")
        if tensorrt is not None:
            tensorrt = _object(tensorrt, where, "tensorrt")
        created = d.get("created", "")
        if not isinstance(created, str):
            raise ManifestError(f"{where}: created must be a string, not {_type_name(created)}")
        return cls(
            model=ModelEntry.from_dict(d["model"], where),
            variants={str(k): VariantEntry.from_dict(v, where, str(k)) for k, v in variants.items()},
            created=created,
            sections={k: v for k, v in d.items() if k not in _TOP_KEYS},
            tensorrt=tensorrt,
            format_version=FORMAT_VERSION,
        )

    def int8_verdict(self) -> tuple[str | None, str]:
        """(verdict, one line saying what was measured) of ``latency_ms``; (None, why) for a folder
        from a dpa-build before the verdict; :class:`ManifestError` for a value not in INT8_VERDICTS."""
        lat = self.sections.get("latency_ms")
        lat = lat if isinstance(lat, dict) else {}
        verdict = lat.get("int8_verdict")
        if verdict is None:
            return None, "INT8 speed-up not judged by this engine folder's dpa-build (rebuild to judge it)"
        if verdict not in INT8_VERDICTS:
            raise ManifestError(f"manifest latency_ms.int8_verdict is {_one_line(verdict)!r}, "
                                f"not one of {', '.join(INT8_VERDICTS)}")  # fmt: skip
        ci = lat.get("speedup_ci")
        ci = ci if isinstance(ci, list) and len(ci) == 2 else [None, None]
        values = {"speedup": lat.get("speedup"), "speedup_ci[0]": ci[0], "speedup_ci[1]": ci[1],
                  "min_speedup": lat.get("min_speedup")}
        speed, low, high, threshold = (_float(values, k, "manifest", "latency_ms", 0.0) if v is not None else math.nan
                                       for k, v in values.items())  # fmt: skip
        return verdict, (f"INT8 {verdict.replace('_', ' ')} on the build machine: {speed:.2f}x (CI {low:.2f}-{high:.2f}, "
                         f"threshold {threshold:g}x)")

    def variant(self, name: str) -> VariantEntry:
        if name not in self.variants:
            raise ManifestError(f"manifest has no variant {name!r} (it lists {', '.join(self.variants) or 'none'})")
        return self.variants[name]

    def variant_path(self, engine_dir: Path | str, name: str) -> Path:
        """The variant's file; :class:`ManifestError` when it resolves (through a symbolic link)
        outside the engine folder."""
        path = Path(engine_dir) / self.variant(name).file
        root = Path(engine_dir).resolve()
        if root not in path.resolve().parents:
            raise ManifestError(f"{path}: variant {name!r} resolves outside the engine folder "
                                f"({path.resolve()}); rebuild with dpa-build")
        return path

    def write(self, engine_dir: Path | str) -> Path:
        """Write ``engine_dir/manifest.json`` atomically (a temp file renamed over it)."""
        engine_dir = Path(engine_dir)
        path = engine_dir / MANIFEST_NAME
        write_file_atomically(path, (json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n").encode())
        return path

    @classmethod
    def load(cls, engine_dir: Path | str, verify: bool = True, required: Sequence[str] = REQUIRED_VARIANTS,
             require_spec_sha256: bool = False) -> Manifest:  # fmt: skip
        """Read and check an engine folder's manifest.

        Checks the format version and every field's shape, the model description against its
        checksum, that the ``required`` variants are listed and, with ``verify``, that their files
        exist and match their recorded sha256 (only those: a broken TensorRT-only file does not stop
        ONNX Runtime). ``require_spec_sha256`` refuses a manifest without the description checksum
        (an older dpa-build). Raises :class:`ManifestError`.
        """
        engine_dir = Path(engine_dir)
        path = engine_dir / MANIFEST_NAME
        if not engine_dir.is_dir():
            raise ManifestError(f"{engine_dir}: engine folder not found (build one with dpa-build)")
        if not path.is_file():
            raise ManifestError(f"{path}: no manifest; is {engine_dir} a folder written by dpa-build?")
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise ManifestError(f"{path}: manifest of {path.stat().st_size} bytes is not one dpa-build wrote "
                                    f"(at most {MAX_MANIFEST_BYTES} bytes read)")  # fmt: skip
            raw = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise ManifestError(f"{path}: unreadable manifest ({_one_line(exc)})") from exc
        manifest = cls.from_dict(raw, str(path))
        if require_spec_sha256 and manifest.model.spec_sha256 is None:
            raise ManifestError(f"{path}: model.spec_sha256 is missing (written by an older dpa-build, before the "
                                f"model description was checksummed); rebuild with dpa-build --force")
        missing = [v for v in required if v not in manifest.variants]
        if missing:
            raise ManifestError(f"{path}: manifest must list the variants {', '.join(required)} "
                                f"(missing: {', '.join(missing)})")
        if verify:
            for name in required:
                verify_file(manifest.variant_path(engine_dir, name), manifest.variants[name].sha256,
                            f"variant {name!r}")
        return manifest
