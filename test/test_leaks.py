"""Repeated engine + pipeline set-up and tear-down (what configure/cleanup does) does not leak.

Measured in a fresh process (test/leak_probe.py), so the shared pytest process's allocations for
other tests neither flake the check nor hide a real leak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("leak_probe.py")


def test_repeated_assembly_and_release_does_not_leak(yolox_engine_dir: Path) -> None:
    out = subprocess.run([sys.executable, str(PROBE), "assembly", str(yolox_engine_dir), "20"], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    growth = r["rss_after_mib"] - r["rss_before_mib"]
    # two ONNX Runtime sessions are tens of MiB: a leaked engine per cycle would show hundreds here
    assert growth < 40.0, f"RSS grew {growth:.1f} MiB over 20 engine/pipeline cycles"
