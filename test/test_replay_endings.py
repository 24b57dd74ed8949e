"""How a dpa-replay ends (issue 12, items 7-9): a complete output folder or none, summary.json
``ended``, exit codes, one-line errors for every option, signals and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from replay_bags import IMAGE, JPEG_IMAGE, NS, T0, jpeg_bag, raw_msg, write

from dpa_perception.replay.output_dir import clean_leftovers
from dpa_perception.tools.replay import main

REPO = Path(__file__).resolve().parents[1]
OUTPUT_FILES = {"summary.json", "frames.jsonl", "report.png", "detections"}


@pytest.fixture(scope="module")
def jpeg(testdata: Path) -> bytes:
    return (testdata / "images" / JPEG_IMAGE).read_bytes()


@pytest.fixture(scope="module")
def small_bag(jpeg: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return jpeg_bag(tmp_path_factory.mktemp("small") / "bag", jpeg, n=6, hz=10.0)


@pytest.fixture(scope="module")
def long_bag(jpeg: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return jpeg_bag(tmp_path_factory.mktemp("long") / "bag", jpeg, n=60, hz=5.0)  # 12 s at realtime


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """main() in this process: exit status and the non-empty stderr lines."""
    try:
        rc = main([*args, "--no-progress"])
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def leftovers(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.replay-*"))


# ---------------------------------------------------------------------------- command-line errors


def test_every_option_with_bad_values_is_one_line(small_bag: Path, yolox_engine_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("dpa_perception: {ros__parameters: [\n")
    not_params = tmp_path / "not_params.yaml"
    not_params.write_text("- 1\n- 2\n")
    unknown_param = tmp_path / "unknown.yaml"
    unknown_param.write_text("dpa_perception:\n  ros__parameters:\n    no_such_parameter: 1\n")
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    bag, eng, out = str(small_bag), str(yolox_engine_dir), str(tmp_path / "out")
    base = [bag, "--engine", eng, "--out", out, "--pace", "fast"]
    cases = {
        "no bag": ["--engine", eng, "--out", out],
        "no --out": [bag, "--engine", eng],
        "no engine": [bag, "--out", out],
        "missing bag": [str(tmp_path / "nope"), "--engine", eng, "--out", out],
        "file as bag": [str(a_file), "--engine", eng, "--out", out],
        "empty folder as bag": [str(empty_dir), "--engine", eng, "--out", out],
        "missing engine": [bag, "--engine", str(tmp_path / "no_engine"), "--out", out],
        "file as engine": [bag, "--engine", str(a_file), "--out", out],
        "missing --params": [*base, "--params", str(tmp_path / "none.yaml")],
        "bad yaml --params": [*base, "--params", str(bad_yaml)],
        "not a parameter file": [*base, "--params", str(not_params)],
        "unknown parameter": [*base, "--params", str(unknown_param)],
        "--set without =": [*base, "--set", "score_threshold"],
        "--set unknown name": [*base, "--set", "no_such=1"],
        "--set bad yaml": [*base, "--set", "score_threshold=[1"],
        "--set bad type": [*base, "--set", "score_threshold=abc"],
        "--set out of range": [*base, "--set", "score_threshold=7"],
        "--topics unknown": [*base, "--topics", "/nope"],
        "--out under a file": [bag, "--engine", eng, "--out", str(a_file / "out")],
        "--out is a file": [bag, "--engine", eng, "--out", str(a_file)],
        "--weather unknown": [*base, "--weather", "snow"],
        "--weather strength": [*base, "--weather", "fog:2"],
        "--weather not a number": [*base, "--weather", "fog:x"],
        "--pace": [*base, "--pace", "slow"],
        "--mode": [*base, "--mode", "fp4"],
        "--backend": [*base, "--backend", "cuda"],
        "--input-shape": [*base, "--input-shape", "round"],
        "--budget-ms text": [*base, "--budget-ms", "abc"],
        "--budget-ms negative": [*base, "--budget-ms", "-5"],
        "--safety-margin-ms": [*base, "--safety-margin-ms", "-1"],
        "--threads text": [*base, "--threads", "two"],
        "--threads negative": [*base, "--threads", "-3"],
        "--max-batch zero": [*base, "--max-batch", "0"],
        "--max-gap zero": [*base, "--max-gap", "0"],
        "--max-gap text": [*base, "--max-gap", "soon"],
        "--max-gap nan": [*base, "--max-gap", "nan"],
        "unknown option": [*base, "--speed", "2"],
    }
    for what, args in cases.items():
        rc, err = run_cli(capsys, *args)
        assert rc != 0, what
        assert len(err) == 1, (what, err)
        assert err[0].startswith("dpa-replay: error:"), (what, err)
        assert "Traceback" not in err[0], what
        assert not Path(out).exists() and not leftovers(Path(out)), what


def test_real_console_script_error_is_one_line(tmp_path: Path, yolox_engine_dir: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "dpa_perception.tools.replay", str(tmp_path / "nope"), "--engine",
                        str(yolox_engine_dir), "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       cwd=REPO, timeout=60)  # fmt: skip
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr and "nope" in p.stderr


# ---------------------------------------------------------------------------- endings in this process


def test_existing_out_needs_force(small_bag: Path, yolox_engine_dir: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    base = [str(small_bag), "--engine", str(yolox_engine_dir), "--out", str(out), "--pace", "fast"]
    assert run_cli(capsys, *base)[0] == 0
    first = summary(out)
    assert first["ended"] == "complete" and {p.name for p in out.iterdir()} == OUTPUT_FILES
    rc, err = run_cli(capsys, *base)
    assert rc == 2 and len(err) == 1 and "--force" in err[0]
    assert summary(out) == first
    (out / "frames.jsonl").write_text("stale\n")
    assert run_cli(capsys, *base, "--force")[0] == 0
    assert (out / "frames.jsonl").read_text() != "stale\n" and summary(out)["ended"] == "complete"
    (out / "mine.txt").write_text("not a replay output")
    rc, err = run_cli(capsys, *base, "--force")
    assert rc == 2 and len(err) == 1 and "mine.txt" in err[0]
    assert not leftovers(out)


def test_all_rejected_exits_1_with_a_complete_folder(yolox_engine_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    img = np.full((48, 64), 1000, np.uint16)
    bag = write(tmp_path / "mono16", [("/depth", IMAGE, T0 + i * NS // 10, raw_msg(T0 + i * NS // 10, img, "mono16"))
                                      for i in range(4)])  # fmt: skip
    out = tmp_path / "out"
    rc, err = run_cli(capsys, str(bag), "--engine", str(yolox_engine_dir), "--out", str(out), "--pace", "fast")
    assert rc == 1
    assert len(err) == 1 and "no frame processed" in err[0] and "mono16" in err[0], err
    s = summary(out)
    assert s["ended"] == "nothing_processed" and s["frames_rejected"] == 4
    assert {p.name for p in out.iterdir()} == OUTPUT_FILES


def test_image_topic_without_messages_exits_2_and_writes_nothing(yolox_engine_dir: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    bag = tmp_path / "empty_topic"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        w.add_connection("/cam", IMAGE, typestore=get_typestore(Stores.ROS2_HUMBLE))
    out = tmp_path / "out"
    rc, err = run_cli(capsys, str(bag), "--engine", str(yolox_engine_dir), "--out", str(out), "--pace", "fast")
    assert rc == 2 and len(err) == 1 and "no messages" in err[0]
    assert not out.exists() and not leftovers(out)


def test_damaged_sqlite_bag_is_one_line_or_a_read_error_run(jpeg: bytes, yolox_engine_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bag = jpeg_bag(tmp_path / "damaged", jpeg, n=20, mcap=False)
    db = next(bag.glob("*.db3"))
    data = bytearray(db.read_bytes())
    rng = np.random.default_rng(3)
    for at in rng.integers(len(data) // 3, len(data), 40):
        data[int(at) : int(at) + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))
    out = tmp_path / "out"
    rc, err = run_cli(capsys, str(bag), "--engine", str(yolox_engine_dir), "--out", str(out), "--pace", "fast")
    errors = [e for e in err if e.startswith("dpa-replay: error:")]
    assert "Traceback" not in "\n".join(err)
    if rc == 0:
        assert summary(out)["ended"] == "complete"
    else:
        assert rc in (1, 2) and len(errors) == 1, err
        assert (rc == 2) == (not out.exists())
        if rc == 1:
            assert summary(out)["ended"] in ("read_error", "nothing_processed")
    assert not leftovers(out)


def test_leftover_temp_folders_of_dead_replays_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = tmp_path / ".out.replay-99999999-abc"
    (dead / "detections").mkdir(parents=True)
    alive = tmp_path / f".out.replay-{os.getpid()}-xyz"
    alive.mkdir()
    assert clean_leftovers(out) == [dead]
    assert not dead.exists() and alive.exists()


# ---------------------------------------------------------------------------- signals, SIGKILL


def start(bag: Path, engine: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "dpa_perception.tools.replay", str(bag), "--engine", str(engine),
                             "--out", str(out), "--no-progress", *extra], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def wait_playing(p: subprocess.Popen[str], out: Path, seconds: float = 1.5) -> None:
    """Until the replay has staged its folder (the engine is loaded), then ``seconds`` of playing."""
    deadline = time.monotonic() + 30
    while not leftovers(out) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert leftovers(out), "the replay never started"
    time.sleep(seconds)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_publishes_the_partial_run_marked_interrupted(long_bag: Path, yolox_engine_dir: Path, tmp_path: Path,
                                                             sig: int, code: int) -> None:
    out = tmp_path / "out"
    p = start(long_bag, yolox_engine_dir, out)
    wait_playing(p, out)
    t = time.monotonic()
    p.send_signal(sig)
    _, stderr = p.communicate(timeout=30)
    assert time.monotonic() - t < 10
    assert p.returncode == code, stderr
    assert "Traceback" not in stderr and "interrupted by" in stderr
    s = summary(out)
    assert s["ended"] == "interrupted" and s["signal"] == signal.Signals(sig).name
    assert 0 < s["messages_read"] < 60 and s["frames_in"] == s["messages_read"]
    assert s["frames_processed"] + s["frames_dropped"] + s["frames_rejected"] + s["frames_failed"] == s["frames_in"]
    assert {q.name for q in out.iterdir()} == OUTPUT_FILES and not leftovers(out)


def test_sigkill_keeps_the_previous_run_whole_and_the_next_run_cleans_up(small_bag: Path, long_bag: Path,
                                                                       yolox_engine_dir: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_cli(capsys, str(small_bag), "--engine", str(yolox_engine_dir), "--out", str(out), "--pace", "fast")[0] == 0
    before = {q.name: (q.read_bytes() if q.is_file() else None) for q in out.iterdir()}
    p = start(long_bag, yolox_engine_dir, out, "--force")
    wait_playing(p, out, 1.0)
    p.kill()
    p.wait(timeout=10)
    assert {q.name: (q.read_bytes() if q.is_file() else None) for q in out.iterdir()} == before
    assert len(leftovers(out)) == 1  # the killed run's staging folder, hidden beside --out
    rc, _ = run_cli(capsys, str(small_bag), "--engine", str(yolox_engine_dir), "--out", str(out), "--pace", "fast",
                    "--force")  # fmt: skip
    assert rc == 0 and not leftovers(out) and summary(out)["ended"] == "complete"


def test_a_bag_that_stops_reading_midway_ends_as_read_error(small_bag: Path, yolox_engine_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import dpa_perception.replay.run as run_module
    from dpa_perception.core.errors import BagError

    real = run_module.iter_bag

    def breaks(path: Path, topics: Any = None, index: int = 0) -> Any:
        for k, m in enumerate(real(path, topics, index)):
            if k == 4:
                raise BagError(f"{path}: read error after 4 image messages (injected)")
            yield m

    monkeypatch.setattr(run_module, "iter_bag", breaks)
    out = tmp_path / "out"
    rc, err = run_cli(capsys, str(small_bag), "--engine", str(yolox_engine_dir), "--out", str(out), "--pace", "fast")
    assert rc == 1 and len(err) == 1 and "read error after 4" in err[0], err
    s = summary(out)
    assert s["ended"] == "read_error" and s["messages_read"] == 4 and s["messages_expected"] == 6
    assert s["frames_in"] == 4 and s["read_errors"] == [f"{small_bag}: read error after 4 image messages (injected)"]
