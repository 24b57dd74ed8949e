"""Every option of every console script (but dpa-replay, tested with its own module) walked with bad
values: a non-zero exit, no traceback, the error on one line (``PROG: error: ...``, the last line on
stderr). The options are read from each tool's argparse parser, so a new option is walked too; a new
console script fails ``test_every_console_script_is_walked`` until it is added here.

Bounded: the other arguments are valid and cheap (a missing model for dpa-build's options so no real
build starts, --runs 1, a 2-frame demo bag); values that are valid after all are listed in VALID.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dpa_perception.demo import evaluate, make_bag
from dpa_perception.tools import bench, build, calibrate, detect
from dpa_perception.tools.cli_common import folder_arg

REPO = Path(__file__).resolve().parents[1]
MISSING, FILE, EMPTY_DIR, ENGINE, IMAGE, MODEL, CALIB, NEW, POINTS = (
    "<missing>", "<file>", "<empty-dir>", "<engine>", "<image>", "<model>", "<calib>", "<new>", "<points>")  # fmt: skip
POINTS_YAML = """cameras:
- topic: /rsu/cam0/image_raw
  image_size: [640, 360]
  points:
  - {pixel: [100.0, 300.0], ground: [-3.0, 8.0]}
  - {pixel: [540.0, 300.0], ground: [3.0, 8.0]}
  - {pixel: [250.0, 200.0], ground: [-3.0, 30.0]}
  - {pixel: [390.0, 200.0], ground: [3.0, 30.0]}
  - {pixel: [320.0, 250.0], ground: [0.0, 15.0]}
  - {pixel: [200.0, 260.0], ground: [-4.0, 13.0]}
"""

NUMBERS = ["0", "-1", "nan", "inf", "1e999", "garbage", ""]
PATHS = [MISSING, FILE, EMPTY_DIR, "", "\x01garbage"]
STRINGS = ["", "garbage", "0", "-1"]

# (parser, main, base arguments) per console script; base arguments hold every required one
TOOLS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[list[str]], int], dict[str, list[str]]]] = {
    "dpa-build": (build.make_parser, build.main, {"model": [MISSING], "--calib": [CALIB], "--out": [NEW],
                                                  "--no-progress": []}),
    "dpa-detect": (detect.make_parser, detect.main, {"images": [IMAGE], "--engine": [ENGINE]}),
    "dpa-bench": (bench.make_parser, bench.main, {"--engine": [ENGINE], "--runs": ["1"]}),
    "dpa-eval": (evaluate.make_parser, evaluate.main, {"--engine": [ENGINE], "--frames": ["1"]}),
    "dpa-demo-bag": (make_bag.make_parser, make_bag.main, {"out": [NEW], "--cameras": ["1"], "--seconds": ["0.4"],
                                                           "--fps": ["5"], "--quiet": []}),
    "dpa-calibrate": (calibrate.make_parser, calibrate.main, {"points": [POINTS], "--out": [NEW]}),
}  # fmt: skip
# option -> base arguments replaced for its walk (so that its own check is what is reached)
WALK_BASE: dict[tuple[str, str], dict[str, list[str]]] = {
    ("dpa-build", "model"): {"model": []},
    ("dpa-build", "--calib"): {"model": [MODEL]},  # the calibration source is read before any build step
}
# bad-looking values that are valid for that option (the run must then succeed, quickly)
VALID: dict[tuple[str, str], set[str]] = {
    ("dpa-detect", "--threads"): {"0"},
    ("dpa-detect", "--score-threshold"): {"0"},
    ("dpa-bench", "--threads"): {"0"},
    ("dpa-demo-bag", "--seed"): {"0"},
    ("dpa-demo-bag", "--jpeg-quality"): {"0"},
    # an odd but legal folder name; a missing parent folder is created (make demo writes out/demo_calib)
    ("dpa-demo-bag", "out"): {"\x01garbage", MISSING},
    ("dpa-calibrate", "--out"): {"\x01garbage"},
    ("dpa-detect", "--annotate"): {MISSING, EMPTY_DIR, "\x01garbage"},  # a folder, created when missing
}
CONSOLE_SCRIPTS_NOT_WALKED = {"dpa-replay": "test_replay_endings.py", "dpa_perception_node": "test_node_without_ros"}


def _values(action: argparse.Action) -> list[str]:
    if action.nargs == 0:
        return []
    if action.choices is not None:
        return ["garbage", "0", ""]
    if action.type in (int, float):
        return NUMBERS
    if action.type in (Path, folder_arg):
        return PATHS
    return STRINGS


def _cases() -> list[tuple[str, str]]:
    out = []
    for prog, (make, _main, _base) in TOOLS.items():
        for action in make()._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            out.append((prog, action.option_strings[0] if action.option_strings else action.dest))
    return out


def _action(prog: str, name: str) -> argparse.Action:
    for action in TOOLS[prog][0]()._actions:
        if name in action.option_strings or (not action.option_strings and action.dest == name):
            return action
    raise AssertionError(name)


@pytest.fixture()
def places(tmp_path: Path, yolox_engine_dir: Path, testdata: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    monkeypatch.chdir(tmp_path)  # relative values ("0", "garbage") land here
    (tmp_path / "garbage.txt").write_text("not an image, not a model, not a bag")
    (tmp_path / "empty").mkdir()
    (tmp_path / "points.yaml").write_text(POINTS_YAML)
    counter = iter(range(1_000_000))
    fixed = {MISSING: str(tmp_path / "no_such" / "thing"), FILE: str(tmp_path / "garbage.txt"),
             EMPTY_DIR: str(tmp_path / "empty"), ENGINE: str(yolox_engine_dir),
             IMAGE: str(testdata / "images" / "dog.jpg"), MODEL: str(testdata / "models" / "yolox_nano.onnx"),
             CALIB: str(testdata / "images"), POINTS: str(tmp_path / "points.yaml")}  # fmt: skip

    def place(token: str) -> str:
        return str(tmp_path / f"new{next(counter)}") if token == NEW else fixed.get(token, token)

    return place


def _argv(prog: str, name: str, value: str, place: Callable[[str], str]) -> list[str]:
    """The base arguments with ``name`` given ``value`` (``--opt=value``, so "-1" and "" stay values)."""
    base = {**TOOLS[prog][2], **WALK_BASE.get((prog, name), {})}
    action = _action(prog, name)
    if action.option_strings:
        base[name] = [f"{name}={value if action.nargs == 0 else place(value)}"]
    else:
        base[name] = [place(value)]
    argv: list[str] = []
    for key, values in base.items():
        if key == name or not key.startswith("-"):
            argv += values if key == name else [place(v) for v in values]
        else:
            argv += [key, *[place(v) for v in values]]
    return argv


def _run(main: Callable[[list[str]], int], argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # anything else would have been a traceback
        pytest.fail(f"{argv}: {type(exc).__name__}: {exc} escaped (a traceback)")
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(("prog", "name"), _cases(), ids=[f"{p} {n}" for p, n in _cases()])
def test_bad_values_are_one_error_line(prog: str, name: str, places: Callable[[str], str], yolox_engine_dir: Path,
                                       capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    action = _action(prog, name)
    values = _values(action) if action.nargs != 0 else ["garbage"]
    engine_files = {p.name: p.stat().st_mtime_ns for p in yolox_engine_dir.iterdir()}
    for value in values:
        argv = _argv(prog, name, value, places)
        rc, err = _run(TOOLS[prog][1], argv, capsys)
        if value in VALID.get((prog, name), set()):
            assert rc == 0, (argv, err)
            continue
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if ": error:" in line]
        assert rc != 0, (argv, err)
        assert "Traceback" not in err, (argv, err)
        assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith(f"{prog}: error:"), (argv, err)
    assert {p.name: p.stat().st_mtime_ns for p in yolox_engine_dir.iterdir()} == engine_files  # nothing written there


def test_every_console_script_is_walked() -> None:
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = {s.split("=")[0].strip() for node in ast.walk(tree) if isinstance(node, ast.Constant)
               and isinstance(node.value, str) and " = dpa_perception." in node.value for s in [node.value]}  # fmt: skip
    assert scripts == set(TOOLS) | set(CONSOLE_SCRIPTS_NOT_WALKED)


@pytest.mark.parametrize("module", ["dpa_perception.tools.build", "dpa_perception.tools.detect",
                                    "dpa_perception.tools.bench", "dpa_perception.demo.evaluate",
                                    "dpa_perception.demo.make_bag"])  # fmt: skip
def test_a_real_process_prints_one_line(module: str, tmp_path: Path) -> None:
    """The same in a process of its own (imports included): an unknown option and a bad value."""
    for argv in (["--no-such-option"], ["--engine", str(tmp_path / "none"), str(tmp_path / "x"), "--runs", "0"]):
        r = subprocess.run([sys.executable, "-m", module, *argv], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and "Traceback" not in r.stderr and len(lines) == 1 and ": error:" in lines[0], r.stderr


def test_node_without_ros() -> None:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("rclpy is importable here: the node would start")
    r = subprocess.run([sys.executable, "-m", "dpa_perception.tools.node_entry"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("dpa_perception_node: error: ROS 2"), r.stderr
    assert "Traceback" not in r.stderr
