"""dpa-build's output folder (build/publish.py): checked up front, swapped in atomically, the old folder
kept on any failure before the swap, and what a killed build left removed (or restored) by the next
run. Also the build's refusal of a model that is no detector."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dpa_perception.build import publish as publish_mod
from dpa_perception.build.engine_dir import build_engine_dir, staging
from dpa_perception.build.publish import check_out_dir, clean_stale, stale_folders
from dpa_perception.core import atomic_dir
from dpa_perception.core.errors import ConfigError, ModelError
from dpa_perception.tools import build as build_cli

REPO = Path(__file__).resolve().parents[1]
YOLOX = "yolox_nano.onnx"


def _quiet(_msg: str) -> None:
    pass


def _hidden(parent: Path, name: str) -> list[Path]:
    return sorted(p for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _engine_like(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(text)
    (folder / "high.onnx").write_bytes(text.encode() * 10)
    return folder


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _enospc(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device (injected)")


# ---------------------------------------------------------------- the swap


def test_publish_replaces_the_folder_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    out = _engine_like(tmp_path / "eng", "old")
    with staging(out) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(f".eng.tmp-{os.getpid()}-")
        (folder / "manifest.json").write_text("new")
    assert (out / "manifest.json").read_text() == "new"
    assert not (out / "high.onnx").exists()  # the whole old folder went, not merged
    assert _hidden(tmp_path, "eng") == []


def test_publish_into_a_new_folder(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "eng"
    with staging(out) as folder:
        (folder / "manifest.json").write_text("new")
    assert (out / "manifest.json").read_text() == "new" and _hidden(out.parent, "eng") == []


@pytest.mark.parametrize("step", ["write", "sync", "rename_aside", "rename_in"])
def test_old_folder_survives_a_failure_at_each_last_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        step: str) -> None:  # fmt: skip
    """ENOSPC injected while writing the last file, syncing, renaming the old folder aside or renaming the
    new one in: the old folder is complete and in place, nothing hidden is left beside it."""
    out = _engine_like(tmp_path / "eng", "old")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_rename = os.rename
    calls: list[str] = []

    def rename(src: object, dst: object) -> None:
        calls.append(Path(str(src)).name)
        if (step == "rename_aside" and len(calls) == 1) or (step == "rename_in" and len(calls) == 2):
            _enospc()
        real_rename(src, dst)  # type: ignore[arg-type]

    if step == "sync":
        monkeypatch.setattr(atomic_dir, "_fsync", _enospc)  # the shared publishing mechanics
    if step.startswith("rename"):
        monkeypatch.setattr(publish_mod.os, "rename", rename)
    with pytest.raises(OSError, match="No space left"):
        with staging(out) as folder:
            (folder / "high.onnx").write_bytes(b"new")
            if step == "write":
                _enospc()
            (folder / "manifest.json").write_text("new")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _hidden(tmp_path, "eng") == []
    if step == "rename_in":
        assert calls[0] == "eng" and calls[2].startswith(".eng.old-")  # aside, in (failed), back


def test_failure_after_the_swap_does_not_lose_the_new_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _engine_like(tmp_path / "eng", "old")
    monkeypatch.setattr(publish_mod.shutil, "rmtree", lambda *a, **k: None)  # the old folder cannot be removed
    with staging(out) as folder:
        (folder / "manifest.json").write_text("new")
    monkeypatch.undo()
    assert (out / "manifest.json").read_text() == "new"
    (aside,) = _hidden(tmp_path, "eng")  # left behind, but only until the next run, which removes it...
    assert aside.name.startswith(f".eng.old-{os.getpid()}-")
    clean_stale(out, _quiet)
    assert aside.exists()  # ...unless its process still runs (this one)


# ---------------------------------------------------------------- litter of killed builds


def test_stale_folders_of_dead_builds_are_removed(tmp_path: Path) -> None:
    out = _engine_like(tmp_path / "eng", "current")
    dead = _dead_pid()
    tmp = _engine_like(tmp_path / f".eng.tmp-{dead}-abcd1234", "half-built")
    old = _engine_like(tmp_path / f".eng.old-{dead}-ef567890", "previous")
    alive = _engine_like(tmp_path / f".eng.tmp-{os.getppid()}-running1", "another build still running")
    other = _engine_like(tmp_path / f".engine2.tmp-{dead}-abcd1234", "another --out")
    assert {p for _, p in stale_folders(out)} == {tmp, old}
    logs: list[str] = []
    clean_stale(out, logs.append)
    assert not tmp.exists() and not old.exists() and alive.exists() and other.exists()
    assert (out / "manifest.json").read_text() == "current" and len(logs) == 2


def test_old_folder_put_aside_by_a_killed_build_is_restored(tmp_path: Path) -> None:
    """Killed between the two renames: --out is missing, its complete old folder is aside; the next
    run renames it back (then refuses to overwrite it without --force)."""
    dead = _dead_pid()
    _engine_like(tmp_path / f".eng.old-{dead}-ef567890", "previous")
    _engine_like(tmp_path / f".eng.tmp-{dead}-abcd1234", "half-built")
    with pytest.raises(ConfigError, match="--force"):
        check_out_dir(tmp_path / "eng", False, _quiet)
    assert (tmp_path / "eng" / "manifest.json").read_text() == "previous"
    assert _hidden(tmp_path, "eng") == []


def test_sigkill_mid_build_leaves_hidden_litter_that_the_next_run_removes(testdata: Path, tmp_path: Path) -> None:
    """A real dpa-build killed with SIGKILL while writing its temp folder (old folder kept); the next
    dpa-build for the same --out (here one that fails at once on a missing model) removes the litter."""
    out = _engine_like(tmp_path / "eng", "old engine")
    cmd = [sys.executable, "-m", "dpa_perception.tools.build", str(testdata / "models" / YOLOX), "--calib",
           str(testdata / "images"), "--out", str(out), "--force", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and not any((p / "high.onnx").exists() for p in _hidden(tmp_path, "eng")):
            assert proc.poll() is None, "the build ended before it was killed"
            time.sleep(0.05)
        (litter,) = _hidden(tmp_path, "eng")
        assert litter.name.startswith(f".eng.tmp-{proc.pid}-")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / "manifest.json").read_text() == "old engine"
    assert litter.exists()
    rc = build_cli.main([str(tmp_path / "missing.onnx"), "--calib", str(testdata / "images"), "--out", str(out),
                         "--force", "--no-progress"])  # fmt: skip
    assert rc == 2
    assert _hidden(tmp_path, "eng") == []
    assert (out / "manifest.json").read_text() == "old engine"


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("sig", "rc"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_ctrl_c_mid_build_removes_its_temp_folder(testdata: Path, tmp_path: Path, sig: int, rc: int) -> None:
    out = _engine_like(tmp_path / "eng", "old engine")
    cmd = [sys.executable, "-m", "dpa_perception.tools.build", str(testdata / "models" / YOLOX), "--calib",
           str(testdata / "images"), "--out", str(out), "--force", "--no-progress"]  # fmt: skip
    # as from a terminal: a runner that started the tests in the background (SIGINT ignored, inherited)
    # must not make the build deaf to the Ctrl-C this test sends
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)  # fmt: skip
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and not any((p / "high.onnx").exists() for p in _hidden(tmp_path, "eng")):
            assert proc.poll() is None, "the build ended before the signal"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == rc, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("dpa-build: ")
    assert _hidden(tmp_path, "eng") == []
    assert (out / "manifest.json").read_text() == "old engine"


# ---------------------------------------------------------------- --out refused up front


def _out_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    target = _engine_like(tmp_path / "real_engine", "x")
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_text("a file")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("mine")
    return {
        "symlink to an engine folder": (tmp_path / "link", "symbolic link"),
        "dangling symlink": (tmp_path / "dangling", "symbolic link"),
        "a file": (tmp_path / "file", "not a folder"),
        "under a file": (tmp_path / "file" / "eng", "is not a folder"),
        "a folder that is no engine folder": (notes, "not an engine folder"),
    }


@pytest.mark.parametrize("case", ["symlink to an engine folder", "dangling symlink", "a file", "under a file",
                                  "a folder that is no engine folder"])  # fmt: skip
def test_bad_out_is_refused_before_the_build_in_one_line(testdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch, case: str) -> None:  # fmt: skip
    out, message = _out_cases(tmp_path)[case]
    from dpa_perception.build import engine_dir

    monkeypatch.setattr(engine_dir, "prepare_model", lambda *a: pytest.fail("the build started"))
    listing = sorted(str(p) for p in tmp_path.rglob("*"))
    rc = build_cli.main([str(testdata / "models" / YOLOX), "--calib", str(testdata / "images"), "--out", str(out),
                         "--force", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("dpa-build: error:") and message in lines[0], err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == listing  # nothing touched


# ---------------------------------------------------------------- a model that is no detector


def _constant_model(path: Path, value: float) -> Path:
    """A model with a YOLOX-like output [1, 336, 85] (128x128 input, strides 8/16/32) that ignores its input."""
    const = numpy_helper.from_array(np.full((1, 336, 85), value, np.float32), "const")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["z", "const"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "constant", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 128, 128])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 336, 85])],
                              [const, numpy_helper.from_array(np.zeros((1,), np.float32), "zero")])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize(("value", "message"), [(0.0, "no detections"), (0.9, "same output")])
def test_a_model_that_is_no_detector_is_refused(testdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                value: float, message: str) -> None:  # fmt: skip
    model = _constant_model(tmp_path / "not_a_detector.onnx", value)
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("dog.jpg", "kitti_000008.png"):
        shutil.copy(testdata / "images" / name, calib / name)
    out = tmp_path / "eng"
    with pytest.raises(ModelError, match=message):
        build_engine_dir(model, calib, out, progress=False, log=_quiet)
    assert not out.exists() and _hidden(tmp_path, "eng") == []
    rc = build_cli.main([str(model), "--calib", str(calib), "--out", str(out), "--no-progress"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith("dpa-build: error:") and "not_a_detector.onnx" in last and message in last
    assert not out.exists()


def test_calibration_frames_the_model_cannot_take_are_skipped(testdata: Path) -> None:
    """A 20000x1 strip among the calibration frames is skipped with a line, not a crash; only strips: one error."""
    from dpa_perception.build.engine_dir import usable_frames
    from dpa_perception.build.model_detect import detect_spec

    spec = detect_spec(testdata / "models" / YOLOX)
    good = np.zeros((540, 960, 3), np.uint8)
    strip = np.zeros((1, 20000, 3), np.uint8)
    logs: list[str] = []
    assert len(usable_frames([strip, good, strip], spec, Path("calib"), logs.append)) == 1
    assert len(logs) == 2 and all("skipping calibration frame" in line for line in logs)
    with pytest.raises(ConfigError, match="none of its 2 frames fits"):
        usable_frames([strip, strip], spec, Path("calib"), _quiet)


def test_out_that_holds_the_build_input_is_refused(testdata: Path, tmp_path: Path) -> None:
    out = _engine_like(tmp_path / "eng", "old")
    model = out / "model.onnx"
    shutil.copy(testdata / "models" / YOLOX, model)
    with pytest.raises(ConfigError, match="holds the model"):
        build_engine_dir(model, testdata / "images", out, force=True, progress=False, log=_quiet)
    with pytest.raises(ConfigError, match="holds --calib"):
        build_engine_dir(testdata / "models" / YOLOX, out, out, force=True, progress=False, log=_quiet)
    assert model.is_file() and (out / "manifest.json").read_text() == "old"
