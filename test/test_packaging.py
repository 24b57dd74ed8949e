"""Packaging and launch rules found on a real ROS 2 Jazzy, checked without ROS (by reading the files)."""

from __future__ import annotations

import ast
import importlib.metadata
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from dpa_perception.core import node_params as P

REPO = Path(__file__).resolve().parents[1]
SKIP_CALLS = {"skip", "importorskip"}


def _module_level_skips(tree: ast.Module) -> list[int]:
    """Lines of pytest.skip / pytest.importorskip calls that run at import time (outside any def/class)."""
    lines = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SKIP_CALLS:
            lines.append(node.lineno)
        stack.extend(ast.iter_child_nodes(node))
    return lines


def test_no_test_module_skips_at_import_time() -> None:
    """Under the launch_testing pytest plugin a module-level skip skips the whole folder: use marks."""
    found = {p.name: lines for p in sorted((REPO / "test").glob("*.py"))
             if (lines := _module_level_skips(ast.parse(p.read_text())))}  # fmt: skip
    assert not found, f"module-level skips (use pytest.mark.skipif): {found}"


def test_the_detector_of_module_level_skips_finds_them() -> None:
    tree = ast.parse("import pytest\ntorch = pytest.importorskip('torch')\nif True:\n    pytest.skip('x')\n"
                     "def f():\n    pytest.skip('fine inside a test')\n")  # fmt: skip
    assert sorted(_module_level_skips(tree)) == [2, 4]


def _calls(path: Path, name: str) -> list[ast.Call]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def test_autostart_activates_only_once() -> None:
    """A permanent OnStateTransition handler re-activates after every manual cleanup -> configure."""
    (handler,) = _calls(REPO / "launch" / "dpa_perception.launch.py", "OnStateTransition")
    kw = {k.arg: k.value for k in handler.keywords}
    assert isinstance(kw.get("handle_once"), ast.Constant) and kw["handle_once"].value is True
    assert kw["goal_state"].value == "inactive"  # type: ignore[attr-defined]


def test_replay_launch_sets_a_clock_rate() -> None:
    text = (REPO / "launch" / "replay.launch.py").read_text()
    assert '"--clock", LaunchConfiguration("clock_hz")' in text
    (arg,) = [c for c in _calls(REPO / "launch" / "replay.launch.py", "DeclareLaunchArgument")
              if c.args and getattr(c.args[0], "value", None) == "clock_hz"]  # fmt: skip
    default = next(k.value.value for k in arg.keywords if k.arg == "default_value")  # type: ignore[attr-defined]
    assert float(default) >= 100.0


def test_pytest_is_the_declared_test_runner_and_bounded_for_launch_testing() -> None:
    reqs = [Requirement(r) for r in importlib.metadata.requires("dpa_perception") or []]
    test = [r for r in reqs if r.name == "pytest" and r.marker is not None and r.marker.evaluate({"extra": "test"})]
    assert test, "setup.py must declare pytest in the 'test' extra (colcon picks pytest from it)"
    spec = test[0].specifier
    assert "9.0" in spec and "8.3" in spec and "7.4" in spec
    assert "9.2" not in spec, "pytest 9.2 breaks the launch_testing plugin of Humble and Jazzy"


@pytest.mark.parametrize("key", ["python3-numpy", "python3-opencv", "python3-yaml", "python3-matplotlib",
                                 "python3-tqdm"])  # fmt: skip
def test_package_xml_declares_the_runtime_dependencies(key: str) -> None:
    deps = {e.text for e in ET.parse(REPO / "package.xml").getroot() if e.tag in ("exec_depend", "depend")}
    assert key in deps


def test_launch_file_loads_the_camera_geometry_before_the_node_config() -> None:
    """cameras:= (dpa-calibrate's file) first, config:= after it: the node's own file wins where both set one."""
    text = (REPO / "launch" / "dpa_perception.launch.py").read_text()
    assert 'parameters=[cameras, config, {"use_sim_time"' in text
    default = yaml.safe_load((REPO / "config" / "no_camera_geometry.yaml").read_text())
    assert list(default) == ["/**"] and set(default["/**"]["ros__parameters"]) <= set(P.SPECS)
