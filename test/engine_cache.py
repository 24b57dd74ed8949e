"""The YOLOX-Nano test engine for tests that cannot take pytest fixtures (launch_testing, ROS tests)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


def cached_engine_dir() -> Path:
    """$DPA_TEST_ENGINE_DIR, or YOLOX-Nano built once (default settings) into a cache folder."""
    env = os.environ.get("DPA_TEST_ENGINE_DIR")
    if env:
        return Path(env)
    from dpa_perception.core.errors import DpaError
    from dpa_perception.core.manifest import Manifest
    from dpa_perception.tools.build import build_engine_dir

    out = Path(tempfile.gettempdir()) / "dpa_test_engine_yolox_nano"
    try:
        Manifest.load(out, verify=True)
        return out
    except DpaError:  # not built yet (or damaged): build it
        pass
    build_engine_dir(TESTDATA / "models" / "yolox_nano.onnx", TESTDATA / "images", out, progress=False, force=True)
    return out
