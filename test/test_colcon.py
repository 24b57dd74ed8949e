"""`colcon build` + `colcon test` on this package pick pytest and collect the whole suite.

colcon chooses pytest only when the package declares it as a test dependency (the ``test`` extra in
setup.py); otherwise it runs ``python -m unittest`` and "Ran 0 tests". colcon installs with pip
(colcon-common-extensions, in the dev extra), so this runs without ROS: the ROS-side tests are
collected and skip with their reason when run, exactly as in a sourced workspace they run.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HAVE_COLCON = importlib.util.find_spec("colcon_core") is not None and importlib.util.find_spec("colcon_ros") is not None


def _run(cmd: list[str], cwd: Path) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def _collected(text: str) -> int:
    m = re.search(r"^(\d+) tests? collected", text, re.M)
    assert m, text[-2000:]
    return int(m.group(1))


@pytest.mark.skipif(not HAVE_COLCON, reason="colcon not installed (pip install colcon-common-extensions)")
def test_colcon_test_runs_pytest_on_the_whole_suite(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "dpa_perception").symlink_to(REPO)
    colcon = [sys.executable, "-m", "colcon"]
    _run([*colcon, "build", "--base-paths", "src"], tmp_path)
    assert (tmp_path / "install" / "dpa_perception" / "lib" / "dpa_perception" / "dpa-build").is_file()
    text = _run([*colcon, "test", "--base-paths", "src", "--packages-select", "dpa_perception",
                 "--event-handlers", "console_direct+", "--pytest-args", "--collect-only", "-q"], tmp_path)  # fmt: skip
    assert "Ran 0 tests" not in text and "unittest" not in text
    direct = _collected(_run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"], REPO))
    assert _collected(text) == direct >= 400
    for module in ("test_ros_node.py", "test_ros_launch.py", "test_demo_train.py"):  # marked, not skipped whole
        assert f"test/{module}::" in text, module
