"""One assembly: the node's configure and dpa-replay build the same runtime from the same parameters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dpa_perception.core import node_params as P
from dpa_perception.core.errors import ConfigError
from dpa_perception.runtime import assemble, load_parameter_files, runtime_config
from dpa_perception.tools.replay import main as replay_main
from dpa_perception.tools.replay import parser, replay_values

REPO = Path(__file__).resolve().parents[1]
# the node configs (a fragment such as no_camera_geometry.yaml, the launch default of cameras:=, is not one)
CONFIGS = sorted(c for c in (REPO / "config").glob("*.yaml") if "engine_dir" in c.read_text())
NS = 1_000_000_000


def node_configure_values(path: Path) -> dict[str, Any]:
    """What the node's on_configure validates, without ROS: rclpy loads the file's ``/**`` section
    into the declared parameters (defaults for the rest) and configure validates them all."""
    params = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    return P.validate_values({**P.defaults(), **params})


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_replay_with_the_node_yaml_builds_what_the_node_builds(config: Path) -> None:
    node = runtime_config(node_configure_values(config))
    replay = runtime_config(replay_values(parser().parse_args(["bag", "--out", "o", "--params", str(config)])))
    assert replay == node
    assert node.engine_dir == yaml.safe_load(config.read_text())["/**"]["ros__parameters"]["engine_dir"]


def test_flags_and_set_override_single_values() -> None:
    a = parser().parse_args(["bag", "--out", "o", "--params", str(REPO / "config" / "rsu_cpu.yaml"),
                             "--budget-ms", "60", "--set", "score_threshold=0.4", "--set", "class_filter=[2, 7]"])
    cfg = runtime_config(replay_values(a))
    assert cfg.pipeline.latency_budget_ms == 60.0 and cfg.decode.score_threshold == 0.4
    assert cfg.decode.class_filter == frozenset({2, 7})
    assert cfg.pipeline.safety_margin_ms == P.default("safety_margin_ms")


@pytest.mark.parametrize("args, needle", [
    (["--set", "no_such=1"], "NAME=VALUE"),
    (["--set", "latency_budget_ms=0.1"], "latency_budget_ms"),
    (["--set", "leave_high_threshold=0.9"], "enter_high_threshold"),
])  # fmt: skip
def test_bad_values_are_refused_like_the_node_refuses_them(args: list[str], needle: str) -> None:
    a = parser().parse_args(["bag", "--out", "o", "--engine", "e", *args])
    with pytest.raises(ConfigError, match=needle):
        replay_values(a)


def test_parameter_files_refuse_unknown_keys_and_other_shapes(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"latency_budget": 50.0}}}))
    with pytest.raises(ConfigError, match="latency_budget"):
        load_parameter_files([bad])
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"some_other_node": {"ros__parameters": {"x": 1}}}))
    with pytest.raises(ConfigError, match="no ros__parameters"):
        load_parameter_files([other])
    named = tmp_path / "named.yaml"
    named.write_text(yaml.safe_dump({"/rsu/dpa_perception": {"ros__parameters": {"max_batch": 2}}}))
    assert load_parameter_files([REPO / "config" / "rsu_cpu.yaml", named])["max_batch"] == 2


def test_live_changes_go_through_the_runtime(yolox_engine_dir: Path) -> None:
    clock = [10**12]
    rt = assemble({"engine_dir": str(yolox_engine_dir), "camera_topics": ["/a/image_raw"]},
                  clock_ns=lambda: clock[0], warmup_runs=1)  # fmt: skip
    try:
        live = rt.apply_live({"score_threshold": 0.6, "latency_budget_ms": 70.0, "class_filter": [2]})
        assert live["score_threshold"] == 0.6
        assert rt.engine.decode.score_threshold == 0.6 and rt.engine.decode.class_filter == frozenset({2})
        assert rt.pipeline.config.latency_budget_ms == 70.0
        before = (rt.engine.decode, rt.pipeline.config)
        for bad in ({"max_batch": 2}, {"score_threshold": 0.2, "leave_high_threshold": 0.9}):
            with pytest.raises(ConfigError):
                rt.apply_live(bad)
            assert (rt.engine.decode, rt.pipeline.config) == before  # nothing changed
        rt.apply_live({"latency_error_after_s": 2.0, "enter_high_threshold": 0.6})
        assert rt.diagnostics.latency_error_after_s == 2.0 and rt.diagnostics.degraded_threshold == 0.6
        assert {r.name for r in rt.status(clock[0], active=True)} >= {"dpa_perception: engine"}
    finally:
        rt.close()


def _multicam_bag(path: Path, testdata: Path, cameras: int = 3, frames: int = 12) -> list[str]:
    """Real roadside JPEGs on ``cameras`` topics, all due at the same instants (10 Hz)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    jpeg = np.frombuffer((testdata / "images" / "uadetrac_MVI_20011_img00001.jpg").read_bytes(), np.uint8)
    topics = [f"/rsu/cam{i}/image_raw/compressed" for i in range(cameras)]
    msgtype = "sensor_msgs/msg/CompressedImage"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = [w.add_connection(t, msgtype, typestore=ts) for t in topics]
        for k in range(frames):
            t = 1_700_000_000 * NS + k * 100_000_000
            for conn in conns:
                header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t // NS, nanosec=t % NS),
                                                  frame_id="cam")  # fmt: skip
                msg = T[msgtype](header=header, format="jpeg", data=jpeg)
                w.write(conn, t, ts.serialize_cdr(msg, msgtype))
    return topics


def _with_throughput(src: Path, dst: Path, rate_of_batch: dict[int, float]) -> Path:
    """A copy of the engine folder ``src`` whose build measured ``rate_of_batch`` (frames/s) on this machine."""
    from dpa_perception.core.machine import machine_key

    shutil.copytree(src, dst)
    d = json.loads((dst / "manifest.json").read_text())
    rows = {"1": {str(b): r for b, r in rate_of_batch.items()}}
    d["throughput"] = {"machine": machine_key(), "workers": {"1": 2},
                       "frames_per_s": {m: {sh: rows for sh in ("square", "rect")} for m in ("int8", "high")}}
    (dst / "manifest.json").write_text(json.dumps(d))
    return dst


@pytest.mark.parametrize(("rates", "batch"), [({1: 100.0, 2: 150.0, 4: 180.0}, 4), ({1: 100.0, 2: 101.0, 4: 101.5}, 1),
                                              ({1: 100.0, 2: 130.0, 4: 90.0}, 2)])
def test_fast_replay_of_a_multicamera_bag_batches_cameras_where_batching_pays(
        yolox_engine_dir: Path, testdata: Path, tmp_path: Path, rates: dict, batch: int) -> None:
    """Cameras due together share a batch, up to max_batch (4, rsu_cpu.yaml), as far as the build measured
    batching faster here: no further than the best measured rate, and where it measured it no faster
    (within 2 %), frames run one by one."""
    engine_dir = _with_throughput(yolox_engine_dir, tmp_path / "engine", rates)
    topics = _multicam_bag(tmp_path / "multicam", testdata)
    out = tmp_path / "out"
    rc = replay_main([str(tmp_path / "multicam"), "--params", str(REPO / "config" / "rsu_cpu.yaml"),
                      "--engine", str(engine_dir), "--out", str(out), "--pace", "fast", "--no-progress"])  # fmt: skip
    assert rc == 0
    frames = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert len(frames) == 36 and {f["topic"] for f in frames} == set(topics)
    proc = [f for f in frames if f["status"] == "processed"]
    assert all(1 <= f["batch"] <= batch for f in proc)
    if batch > 1:
        assert max(f["batch"] for f in proc) > 1, "frames due together on several cameras run in one batch"
    assert all(f["batch"] == 0 for f in frames if f["status"] != "processed")
    s = json.loads((out / "summary.json").read_text())
    assert sum(s["batch_sizes"].values()) == len(proc) and s["max_batch"] == batch
    assert "measured by dpa-build here" in s["engine"]["throughput_reason"]
