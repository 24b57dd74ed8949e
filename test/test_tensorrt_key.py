"""CPU tests of TensorRT engine keys, refusals and machine probes (no TensorRT, no GPU)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpa_perception.backends.tensorrt.key import (
    EngineKey,
    check_engine_entry,
    compare,
    is_engine_file_name,
    rebuild_command,
    refusal_message,
)
from dpa_perception.backends.tensorrt.profiles import ShapeProfile
from dpa_perception.core.errors import BackendError, ConfigError
from dpa_perception.core.manifest import Manifest

HINT = "`dpa-build MODEL --backend tensorrt --out DIR`"


def _key(**over) -> EngineKey:
    base = {
        "model_sha256": "d39bee73" + "0" * 56,
        "source_sha256": "ab" * 32,
        "variant": "high",
        "precision": "fp16",
        "trt_version": "10.3.0",
        "compute_capability": "8.7",
        "dla_core": -1,
        "input_name": "images",
        "profile": ShapeProfile((1, 3, 128, 128), (8, 3, 416, 416), (8, 3, 416, 416)),
    }
    base.update(over)
    return EngineKey(**base)


def _write_engine(tmp_path: Path, key: EngineKey, payload: bytes = b"engine-bytes") -> dict:
    name = key.file_name()
    (tmp_path / name).write_bytes(payload)
    return {
        "file": name,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "digest": key.digest(),
        "key": key.to_dict(),
    }


def test_tensorrt_key_digest_is_stable_across_processes_and_round_trip():
    k = _key()
    # Pinned value: a change to the canonical form silently invalidates every deployed engine.
    assert k.digest() == "148a60979634"
    assert len(k.digest()) == 12
    assert EngineKey.from_dict(json.loads(json.dumps(k.to_dict()))) == k
    code = (
        "from dpa_perception.backends.tensorrt.key import EngineKey;import json,sys;"
        "print(EngineKey.from_dict(json.loads(sys.argv[1])).digest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(k.to_dict())], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == k.digest()
    assert k.file_name() == f"high_{k.digest()}.engine"
    assert is_engine_file_name(k.file_name())
    assert not is_engine_file_name("high_xyz.engine")


def test_tensorrt_key_every_field_changes_the_digest():
    k = _key()
    changes = {
        "model_sha256": "ff" * 32,
        "source_sha256": "cd" * 32,
        "variant": "int8",
        "precision": "int8+fp16",
        "trt_version": "11.0.1",
        "compute_capability": "9.0",
        "dla_core": 0,
        "input_name": "input",
        "profile": ShapeProfile((1, 3, 416, 416), (4, 3, 416, 416), (4, 3, 416, 416)),
    }
    digests = {k.digest()}
    for field, value in changes.items():
        digests.add(dataclasses.replace(k, **{field: value}).digest())
    assert len(digests) == len(changes) + 1


def test_trt_compare_reports_each_difference_in_words():
    want = _key(trt_version="11.0.1", compute_capability="9.0")
    found = _key(variant="int8", precision="int8+fp16", dla_core=0)
    diffs = compare(want, found)
    text = "\n".join(diffs)
    assert "engine built with 10.3.0, this machine has 11.0.1" in text
    assert "engine built for 8.7, this machine has 9.0" in text
    assert "engine is int8, high was asked for" in text
    assert "int8+fp16" in text and "fp16 was expected" in text
    assert "engine built for dla:0, gpu was asked for" in text
    assert len(diffs) == 5
    assert compare(_key(), _key()) == []


def test_tensorrt_refusal_message_leads_with_trt_version_and_gpu():
    want = _key(trt_version="11.0.1", compute_capability="9.0")
    found = _key()
    msg = refusal_message("high_ab12.engine", want, found, compare(want, found), HINT)
    assert msg == (
        "engine high_ab12.engine was built for TensorRT 10.3.0 on compute capability 8.7, this "
        "machine has TensorRT 11.0.1 on 9.0: rebuild with `dpa-build MODEL --backend tensorrt "
        "--out DIR`"
    )


def test_tensorrt_check_entry_accepts_a_matching_engine(tmp_path):
    k = _key()
    entry = _write_engine(tmp_path, k)
    assert check_engine_entry(tmp_path, entry, k, rebuild_hint=HINT) == tmp_path / k.file_name()


def test_tensorrt_check_entry_refuses_missing_entry_and_missing_file(tmp_path):
    k = _key()
    with pytest.raises(BackendError, match=r"no TensorRT engine for variant 'high'.*dpa-build"):
        check_engine_entry(tmp_path, None, k, rebuild_hint=HINT)
    entry = _write_engine(tmp_path, k)
    (tmp_path / entry["file"]).unlink()
    with pytest.raises(BackendError, match=rf"engine {entry['file']} listed in .* is missing: rebuild"):
        check_engine_entry(tmp_path, entry, k, rebuild_hint=HINT)


def test_tensorrt_check_entry_refuses_corrupt_file(tmp_path):
    k = _key()
    entry = _write_engine(tmp_path, k)
    (tmp_path / entry["file"]).write_bytes(b"engine-bytes but truncated or replaced")
    with pytest.raises(BackendError, match=r"is corrupt or was replaced \(sha256 .*rebuild with"):
        check_engine_entry(tmp_path, entry, k, rebuild_hint=HINT)


def test_tensorrt_check_entry_refuses_variant_and_precision_mismatch(tmp_path):
    built = _key(variant="int8", precision="int8+fp16")
    entry = _write_engine(tmp_path, built)
    want = _key()  # high / fp16 on the same machine
    with pytest.raises(BackendError) as exc:
        check_engine_entry(tmp_path, entry, want, rebuild_hint=HINT)
    msg = str(exc.value)
    assert msg.startswith(f"engine {built.file_name()} does not match this node (")
    assert "variant: engine is int8, high was asked for" in msg
    assert "precision: engine computes in int8+fp16, fp16 was expected" in msg
    assert msg.endswith(f"rebuild with {HINT}")


def test_tensorrt_check_entry_refuses_hand_edited_key(tmp_path):
    k = _key()
    entry = _write_engine(tmp_path, k)
    entry["key"]["trt_version"] = "11.0.1"  # someone "fixed" the manifest by hand
    with pytest.raises(BackendError, match="does not hash to its recorded digest"):
        check_engine_entry(tmp_path, entry, _key(trt_version="11.0.1"), rebuild_hint=HINT)


def test_tensorrt_profile_coverage_rules(tmp_path):
    small = _key(profile=ShapeProfile((1, 3, 128, 128), (4, 3, 416, 416), (4, 3, 416, 416)))
    # engine up to batch 8 serves a node asking for 4 ...
    assert compare(small, _key()) == []
    # ... but an engine up to 4 cannot serve a node asking for 8
    diffs = compare(_key(), small)
    assert diffs and diffs[0].startswith("input shapes: engine profile 1x3x128x128 .. 4x3x416x416")
    # static DLA engines: same C,H,W, batch >= asked (padded at run time)
    dla8 = _key(dla_core=0, profile=ShapeProfile(*((8, 3, 416, 416),) * 3))
    dla4 = _key(dla_core=0, profile=ShapeProfile(*((4, 3, 416, 416),) * 3))
    assert compare(dla4, dla8) == []
    assert compare(dla8, dla4) != []
    with pytest.raises(ConfigError):
        ShapeProfile((2, 3, 416, 416), (1, 3, 416, 416), (4, 3, 416, 416))


def test_tensorrt_rebuild_command_names_model_and_folder(tmp_path):
    spec = {"family": "yolox", "input_name": "images", "output_name": "output", "input_hw": [32, 32],
            "num_classes": 80, "num_anchors": 21}
    manifest = Manifest.from_dict({"format_version": 1, "variants": {},
                                   "model": {"source": "yolox_nano.onnx", "sha256": "ab" * 32, "spec": spec}}, "m")
    assert rebuild_command(tmp_path, manifest) == (
        f"`dpa-build yolox_nano.onnx --backend tensorrt --out {tmp_path}`"
    )
    assert rebuild_command(tmp_path, None) == f"`dpa-build MODEL --backend tensorrt --out {tmp_path}`"
