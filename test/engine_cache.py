"""Engine folders for the tests, built once per model and build arguments and cached between runs.

The key is the model's sha256, the calibration files, the build arguments and the source of the
build wing (so a change to the builder rebuilds). Also used by tests that cannot take pytest
fixtures (launch_testing, ROS tests). ``$DPA_TEST_ENGINE_DIR`` overrides the default YOLOX-Nano
folder; ``$DPA_TEST_CACHE`` moves the cache (default: the temp dir).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"
DEFAULT_MODEL = TESTDATA / "models" / "yolox_nano.onnx"
DEFAULT_CALIB = TESTDATA / "images"
# the code an engine folder depends on: the build wing, the manifest format, the model description
BUILD_SOURCES = ("dpa_perception/build", "dpa_perception/core/manifest.py", "dpa_perception/core/model_spec.py",
                 "dpa_perception/core/preprocess.py", "dpa_perception/core/postprocess.py")  # fmt: skip


def _digest(model: Path, calib: Path, args: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(model.read_bytes())
    files = sorted(p for p in calib.rglob("*") if p.is_file()) if calib.is_dir() else [calib]
    for p in files:
        h.update(str(p.relative_to(calib) if calib.is_dir() else p.name).encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    h.update(json.dumps(args, sort_keys=True, default=str).encode())
    for src in BUILD_SOURCES:
        root = REPO / src
        for p in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cached_engine_dir(model: Path = DEFAULT_MODEL, calib: Path = DEFAULT_CALIB, **build_args: Any) -> Path:
    """An engine folder built by dpa-build from ``model`` and ``calib`` with ``build_args``, cached by key."""
    env = os.environ.get("DPA_TEST_ENGINE_DIR")
    if env and model == DEFAULT_MODEL and calib == DEFAULT_CALIB and not build_args:
        return Path(env)
    from dpa_perception.build.engine_dir import build_engine_dir
    from dpa_perception.core.errors import DpaError
    from dpa_perception.core.manifest import Manifest

    root = Path(os.environ.get("DPA_TEST_CACHE") or tempfile.gettempdir()) / "dpa_test_engines"
    out = root / f"{model.stem}_{_digest(model, calib, build_args)}"
    try:
        Manifest.load(out, verify=True)
        return out
    except DpaError:  # not built yet (or damaged): build it (written to a temp folder, renamed at the end)
        pass
    root.mkdir(parents=True, exist_ok=True)
    build_engine_dir(model, calib, out, progress=False, force=True, log=lambda _msg: None, **build_args)
    return out


def demo_engine_dir(tmp: Path) -> Path:
    """The shipped demo detector's engine folder, calibrated on 8 rendered frames written into ``tmp``
    (built once and cached, like any other)."""
    import cv2

    from dpa_perception.demo.scene import sample

    calib = tmp / "calib"
    calib.mkdir()
    for i in range(8):
        img, _, _, _ = sample(900 + i)
        cv2.imwrite(str(calib / f"{i}.png"), img)
    return cached_engine_dir(REPO / "dpa_perception" / "demo" / "assets" / "demo_detector.onnx", calib, bench_runs=3)
