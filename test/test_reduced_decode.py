"""JPEGs decoded at reduced scale (what the letterbox keeps) detect what full decoding detects."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from dpa_perception.build.metrics import agreement
from dpa_perception.core.image_codec import decode_frame
from dpa_perception.core.pipeline import Pipeline, PipelineConfig
from dpa_perception.core.preprocess import resized_hw
from dpa_perception.inference.engine import DualModeEngine


def street_jpegs(testdata: Path) -> list[bytes]:
    out = []
    for p in sorted((testdata / "images").iterdir()):
        if p.name.startswith("dog"):
            continue
        img = cv2.imread(str(p))
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
    return out


def test_reduced_decode_covers_the_target_and_reports_its_scale(testdata: Path) -> None:
    data = street_jpegs(testdata)[0]
    full = decode_frame(SimpleNamespace(format="jpeg", data=data), True)
    half = decode_frame(SimpleNamespace(format="jpeg", data=data), True, target=lambda h, w: (h // 2, w // 2))
    assert half.original_hw == full.original_hw == full.image.shape[:2]
    assert half.image.shape[0] * 2 == full.image.shape[0] and half.image.shape[1] * 2 == full.image.shape[1]
    assert half.scale_xy == (2.0, 2.0) and full.scale_xy == (1.0, 1.0)
    eighth = decode_frame(SimpleNamespace(format="jpeg", data=data), True, target=lambda h, w: (1, 1))
    assert eighth.scale_xy == (8.0, 8.0)


@pytest.mark.parametrize("mode", ["high", "int8"])
def test_detections_agree_with_full_decoding(warm_yolox_engine: DualModeEngine, testdata: Path, mode: str) -> None:
    spec = warm_yolox_engine.spec
    runs = {}
    for name, target in (("full", None), ("reduced", lambda h, w: resized_hw((h, w), spec))):
        p = Pipeline(warm_yolox_engine, PipelineConfig(precision_mode=mode, latency_budget_ms=10_000.0),
                     clock_ns=lambda: 10**12, decode_target=target)  # fmt: skip
        dets = []
        for data in street_jpegs(testdata):
            assert p.submit_message("cam", SimpleNamespace(format="jpeg", data=data), True, 10**12) is None
            (r,) = p.step()
            dets.append(r.detections)
        runs[name] = dets
    # recall: full-decode boxes >= 0.35 found among reduced ones >= 0.25; precision the other way round
    # (a margin around the 0.3 operating threshold, so a score moving 0.29 -> 0.31 is no disagreement)
    def found(ref_runs: list, test_runs: list) -> tuple[int, int]:
        hit = n = 0
        for ref, test in zip(ref_runs, test_runs):
            a = agreement(ref.filter(ref.scores >= 0.35), test, iou=0.5, min_score=0.25)
            hit, n = hit + a.matched, n + a.n_ref
        return hit, n

    (hit_r, n_r), (hit_p, n_p) = found(runs["full"], runs["reduced"]), found(runs["reduced"], runs["full"])
    assert n_r > 20
    assert hit_r / n_r >= 0.95 and hit_p / n_p >= 0.95, (hit_r, n_r, hit_p, n_p)
    assert np.isfinite([b for d in runs["reduced"] for b in d.boxes.ravel()]).all()


def test_cpu_summary_names_the_int8_relevant_features() -> None:
    from dpa_perception.core.machine import cpu_summary

    info = "processor: 0\nmodel name : AMD EPYC 9R14\nflags : fpu avx2 fma avx512f avx512_vnni\n"
    line = cpu_summary(info)
    assert "AMD EPYC 9R14" in line and "avx2 fma avx512f avx512_vnni" in line and "avx_vnni" not in line
    assert "none of" in cpu_summary("model name : Cortex\nFeatures : fp asimd\n")
