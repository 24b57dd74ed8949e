"""The layers import only downwards, and files and functions stay small (read from the source, no import)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dpa_perception"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
# runtimes, build-time libraries and ROS: never below the backends
CORE_FORBIDDEN = ("onnxruntime", "onnx", "tensorrt", "rclpy", "dpa_perception.backends", "dpa_perception.tools",
                  "dpa_perception.inference", "dpa_perception.runtime", "dpa_perception.build",
                  "dpa_perception.ros", "dpa_perception.replay", "dpa_perception.bags", "dpa_perception.demo")  # fmt: skip
ROS_FORBIDDEN = ("dpa_perception.backends", "onnxruntime", "tensorrt", "dpa_perception.tools", "dpa_perception.build")


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions (relative imports resolved)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[: -node.level])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def violations(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted((PKG / folder).rglob("*.py")):
        bad = sorted(m for m in imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(PKG))] = bad
    return found


def test_core_imports_no_runtime_build_library_ros_or_upper_layer() -> None:
    assert not violations("core", CORE_FORBIDDEN)


def test_world_package_is_core_level() -> None:
    """Projection, tracking and the V2X records are ROS-free and runtime-free, like core."""
    assert not violations("world", CORE_FORBIDDEN)


def test_ros_layer_imports_no_backend_or_tool() -> None:
    assert not violations("ros", ROS_FORBIDDEN)


def test_backends_import_neither_the_assembly_nor_the_tools() -> None:
    assert not violations("backends", ("dpa_perception.runtime", "dpa_perception.tools", "dpa_perception.ros",
                                       "dpa_perception.inference", "dpa_perception.replay", "rclpy"))  # fmt: skip


def test_the_import_check_sees_violations(tmp_path: Path) -> None:
    f = PKG / "core" / "_probe_for_test.py"
    assert not f.exists()
    try:
        f.write_text("def g():\n    import onnx\n    from ..backends import base\n")
        assert violations("core", CORE_FORBIDDEN) == {"core/_probe_for_test.py": ["dpa_perception.backends",
                                                                                 "dpa_perception.backends.base",
                                                                                 "onnx"]}  # fmt: skip
    finally:
        f.unlink()


SOURCES = [p for p in sorted(PKG.rglob("*.py")) if "demo" not in p.relative_to(PKG).parts]


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PKG)) for p in SOURCES])
def test_files_and_functions_stay_small(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) < MAX_FILE_LINES, f"{path.name}: {len(text.splitlines())} lines"
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]  # fmt: skip
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_runtime_path_loads_no_build_or_report_library_at_import() -> None:
    """The node's and the replay's assembly import neither onnx (build only) nor scipy.optimize (0.5 s; loaded at
    the tracker's first assignment) nor matplotlib (reports, written at the end)."""
    import subprocess
    import sys

    code = ("import sys, dpa_perception.runtime, dpa_perception.replay.run, dpa_perception.tools.detect; "
            "print(sorted(m for m in ('onnx', 'scipy', 'matplotlib', 'pymap3d', 'motmetrics') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
