"""The engine folder's ``manifest.json``: what was built, from what, and checksums to trust it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dpa_perception.core.errors import ManifestError
from dpa_perception.core.model_spec import ModelSpec

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
# The variant files an ONNX Runtime engine folder must hold; int8_trt is TensorRT's form.
REQUIRED_VARIANTS = ("high", "int8")


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


def write_manifest(engine_dir: Path, manifest: dict[str, Any]) -> Path:
    path = engine_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def load_manifest(engine_dir: Path, verify: bool = True) -> dict[str, Any]:
    """Read and check an engine folder's manifest.

    Checks the format version, the model description and, with ``verify``, that every variant
    file exists and matches its recorded sha256. Raises :class:`ManifestError` naming the problem.
    """
    path = engine_dir / MANIFEST_NAME
    if not engine_dir.is_dir():
        raise ManifestError(f"{engine_dir}: engine folder not found (build one with dpa-build)")
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest; is {engine_dir} a folder written by dpa-build?")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{path}: unsupported manifest format {manifest.get('format_version')!r}")
    variants = manifest.get("variants")
    if not isinstance(variants, dict) or any(v not in variants for v in REQUIRED_VARIANTS):
        raise ManifestError(f"{path}: manifest must list the variants {', '.join(REQUIRED_VARIANTS)}")
    try:
        ModelSpec.from_dict(manifest["model"]["spec"])
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"{path}: manifest has no model description") from exc
    if verify:
        for name, entry in variants.items():
            verify_file(engine_dir / entry["file"], entry.get("sha256"), f"variant {name!r}")
    return manifest


def manifest_spec(manifest: dict[str, Any]) -> ModelSpec:
    return ModelSpec.from_dict(manifest["model"]["spec"])
