"""Shared pytest fixtures: the real test data lives beside the repository in ../shared/testdata."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from engine_cache import cached_engine_dir

# the engines' optimised-graph cache (onnxruntime_backend.ort_cache_dir) of the tests: not the user's
os.environ.setdefault("DPA_ORT_CACHE", str(Path(tempfile.gettempdir()) / "dpa_test_ort_cache"))

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.fail(f"shared test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def yolox_engine_dir(testdata: Path) -> Path:
    """An engine folder built by dpa-build from the shared YOLOX-Nano and the six shared images.

    Built once per model and build arguments and cached between runs (test/engine_cache.py); set
    DPA_TEST_ENGINE_DIR to use a folder built with the default settings instead.
    """
    return cached_engine_dir()


@pytest.fixture(scope="module")
def warm_yolox_engine(yolox_engine_dir: Path):
    """A DualModeEngine on the shared YOLOX-Nano folder, warmed up (one per test module)."""
    from dpa_perception.inference.engine import DualModeEngine

    engine = DualModeEngine(yolox_engine_dir)
    engine.warmup(3)
    yield engine
    engine.close()
