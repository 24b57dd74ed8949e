"""Calibration frames (build/calibration.py): from an image folder or a rosbag2, and the held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dpa_perception.build.calibration import load_frames, split_holdout
from dpa_perception.core.errors import BagError, ConfigError


def test_load_frames_from_folder(testdata: Path) -> None:
    frames = load_frames(testdata / "images", limit=32)
    assert len(frames) == 6
    assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in frames)
    few = load_frames(testdata / "images", limit=3)
    assert len(few) == 3


def test_split_holdout_small_and_large() -> None:
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for _ in range(6)]
    calib, held, _ = split_holdout(small)
    assert len(calib) == 6 and len(held) == 18
    np.testing.assert_array_equal(held[0], small[0][:, ::-1])  # mirrored copy
    large = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(12)]
    calib, held, _ = split_holdout(large)
    assert len(held) == 3 and len(calib) == 9
    assert all(h is large[i] for h, i in zip(held, (0, 4, 8)))


def test_load_frames_from_bag(testdata: Path) -> None:
    """A rosbag2 is read through bags.reader: every n-th image message, decoded to BGR."""
    bag = testdata / "bags" / "uadetrac_roadside_compressed_sqlite3"
    frames = load_frames(bag, limit=5)
    assert len(frames) == 5
    assert all(f.dtype == np.uint8 and f.shape == (540, 960, 3) for f in frames)
    assert len(load_frames(bag, limit=5, topics=["/roadside_cam/image_raw/compressed"])) == 5


def test_load_frames_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no images"):
        load_frames(empty, limit=4)
    with pytest.raises(BagError, match="nowhere"):
        load_frames(tmp_path / "nowhere", limit=4)
