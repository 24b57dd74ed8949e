"""Shared pytest fixtures: the real test data lives beside the repository in ../shared/testdata."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.fail(f"shared test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def yolox_engine_dir(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engine folder built by dpa-build from the shared YOLOX-Nano and the six shared images.

    Built once per test session (about a minute); set DPA_TEST_ENGINE_DIR to reuse a folder
    built with the same defaults.
    """
    reuse = os.environ.get("DPA_TEST_ENGINE_DIR")
    if reuse and (Path(reuse) / "manifest.json").is_file():
        return Path(reuse)
    from dpa_perception.tools.build import build_engine_dir

    out = tmp_path_factory.mktemp("engines") / "yolox_nano"
    build_engine_dir(testdata / "models" / "yolox_nano.onnx", testdata / "images", out, progress=False,
                     bench_runs=5, log=lambda _msg: None)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def warm_yolox_engine(yolox_engine_dir: Path):
    """A DualModeEngine on the shared YOLOX-Nano folder, warmed up (one per test module)."""
    from dpa_perception.inference.engine import DualModeEngine

    engine = DualModeEngine(yolox_engine_dir)
    engine.warmup(3)
    yield engine
    engine.close()
