"""The demo trainer: one tiny step gives a finite loss, and the export matches the YOLOX adapter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

# A mark, not a module-level skip: under ROS 2's launch_testing pytest plugin a module-level skip
# skips the whole test folder. Only a missing torch skips; a broken install still fails loudly.
HAVE_TORCH = importlib.util.find_spec("torch") is not None
pytestmark = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is a training-only dependency (pip install torch)")
if HAVE_TORCH:
    import torch


def test_one_training_step_has_finite_loss() -> None:
    from dpa_perception.demo.model_torch import DemoDetector, grids
    from dpa_perception.demo.train import detection_loss, render_set, spec_for

    torch.manual_seed(0)
    torch.set_num_threads(1)
    spec = spec_for()
    images, targets = render_set(123, 2, spec)
    assert images.dtype == np.uint8 and images.max() > 100  # 0..255 pixels, scaled when fed
    model = DemoDetector()
    grid, stride = grids(spec.input_hw)
    raw = model(torch.from_numpy(images).float() / 255)
    assert raw.shape == (2, spec.num_anchors, 11)
    loss, parts = detection_loss(raw, [torch.from_numpy(t) for t in targets], grid, stride, 6)
    assert torch.isfinite(loss) and all(np.isfinite(v) for v in parts.values())
    loss.backward()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    opt.step()
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_assignment_gives_every_box_an_anchor() -> None:
    from dpa_perception.demo.model_torch import grids
    from dpa_perception.demo.train import assign, spec_for

    spec = spec_for()
    grid, stride = grids(spec.input_hw)
    gt = torch.tensor([[10.0, 10.0, 13.0, 18.0, 0], [100.0, 50.0, 180.0, 120.0, 2], [0.0, 0.0, 300.0, 180.0, 4]])
    idx = assign(gt, grid, stride)
    assert set(idx[idx >= 0].tolist()) == {0, 1, 2}


def test_assignment_gives_a_small_box_the_cells_around_its_centre() -> None:
    from dpa_perception.demo.model_torch import grids
    from dpa_perception.demo.train import assign, spec_for

    grid, stride = grids(spec_for().input_hw)
    gt = torch.tensor([[101.0, 61.0, 107.0, 70.0, 1]])  # 6x9 px, centre (104, 65.5): inside one stride-8 cell
    idx = assign(gt, grid, stride)
    pos = (idx == 0).nonzero()[:, 0]
    assert (stride[pos, 0] == 8).all()  # only the level whose size range holds it
    centres = (grid[pos] + 0.5) * 8
    assert 4 <= len(pos) <= 9  # 2x2 to 3x3 cells, not a single one
    assert ((centres - torch.tensor([104.0, 65.5])).abs() <= 8.0).all()


def test_export_decodes_with_the_package_adapter(tmp_path: Path) -> None:
    import onnxruntime as ort

    from dpa_perception.build.model_detect import detect_spec
    from dpa_perception.demo.model_torch import DemoDetector, ExportWrapper
    from dpa_perception.demo.train import export_onnx, spec_for, write_yaml

    torch.manual_seed(0)
    model = DemoDetector()
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    write_yaml(path.with_suffix(".yaml"), spec_for())
    spec = detect_spec(path)
    assert spec == spec_for()
    x = np.random.default_rng(0).random((2, 3, *spec.input_hw), np.float32)  # 0..1 after scale 1/255
    out = ort.InferenceSession(str(path)).run(None, {"images": x})[0]
    ref = ExportWrapper(model.eval())(torch.from_numpy(x)).detach().numpy()
    assert out.shape == (2, spec.num_anchors, 11)
    assert np.allclose(out, ref, atol=1e-4)
    assert ((out[..., 4:] >= 0) & (out[..., 4:] <= 1)).all()


def test_training_is_reproducible_by_seed(tmp_path: Path) -> None:
    import onnxruntime as ort

    from dpa_perception.demo.train import parse_args, spec_for, train

    def run(name: str, seed: int) -> tuple[np.ndarray, dict]:
        out = tmp_path / name
        rec = train(parse_args(["--out", str(out), "--frames", "8", "--val-frames", "4", "--epochs", "1",
                                "--batch", "4", "--seed", str(seed), "--threads", "1"]))
        x = np.random.default_rng(1).random((1, 3, *spec_for().input_hw), np.float32)
        return ort.InferenceSession(str(out / "demo_detector.onnx")).run(None, {"images": x})[0], rec

    a, rec_a = run("a", 0)
    b, rec_b = run("b", 0)
    c, _ = run("c", 1)
    assert np.array_equal(a, b)  # same seeds: the same frames, order, augmentation and weights
    assert rec_a["steps"] == 2 and rec_a["data"] == rec_b["data"]
    assert not np.allclose(a, c)  # another torch seed: another model
    assert (tmp_path / "a" / "training_curves.png").is_file() and (tmp_path / "a" / "demo_detector.yaml").is_file()
