"""CPU tests of the placement report: DLA fallback log lines and engine inspector summaries."""

from __future__ import annotations

import json

from trt_fakes import DLA0, GPU

from dpa_perception.backends.tensorrt.placement_report import (
    parse_dla_fallback_messages,
    placement_report,
    summarize_inspector_json,
)


def test_tensorrt_inspector_summary_and_fallback_log_parsing():
    log = [
        "Default DLA is enabled but layer /head/Concat is not supported on DLA, falling back to GPU.",
        "DLA supports only 8 subgraphs per DLA core. Switching to GPU for layer /neck/Conv_7",
        "Default DLA is enabled but layer /head/Concat is not supported on DLA, falling back to GPU.",
        "something unrelated",
    ]
    assert parse_dla_fallback_messages(log) == ["/head/Concat", "/neck/Conv_7"]
    trt10 = json.dumps({"Layers": [{"Name": "a", "LayerType": "DLA"}, {"Name": "b", "LayerType": "CaskConvolution"}],
                        "Bindings": ["images", "output"]})
    trt11 = json.dumps({"Layers": ["a", "b", "c"], "I/O Tensors": [{"Name": "images"}]})
    assert summarize_inspector_json(trt10) == {"engine_layers": 2, "engine_dla_layers": 1}
    assert summarize_inspector_json(trt11) == {"engine_layers": 3, "engine_dla_layers": 0}
    assert summarize_inspector_json("not json")["engine_layers"] is None
    rep = placement_report(DLA0, ["a", "b", "c", "d"], ["b"], ["d", "x"])
    assert (rep["on_dla"], rep["on_gpu"], rep["fell_back"]) == (1, 3, ["b", "d", "x"])
    assert placement_report(GPU, ["a", "b"], [], [])["on_gpu"] == 2
