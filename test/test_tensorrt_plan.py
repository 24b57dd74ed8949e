"""CPU tests of TensorRT build plans (TensorRT 10 weak typing vs TensorRT 11 strong typing, by
feature detection) and of placement plans, with fake ``tensorrt`` namespaces."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from trt_fakes import DLA0, GPU, fake_trt_namespace

from dpa_perception.backends.base import Placement
from dpa_perception.backends.tensorrt.features import detect_features
from dpa_perception.backends.tensorrt.plan import parse_placement_plan, plan_variant, validate_placements
from dpa_perception.core.errors import BackendError, ConfigError


def test_tensorrt10_plan_uses_weak_typing_precision_flags():
    f = detect_features(fake_trt_namespace("10.3.0"))
    assert f.weakly_typed and f.has_strongly_typed_flag
    int8 = plan_variant(f, "int8", GPU)
    high = plan_variant(f, "high", GPU)
    assert (int8.source, int8.builder_flags, int8.network_flags) == ("int8_trt", ("INT8", "FP16"), ())
    assert (int8.precision, int8.strongly_typed, int8.fp16_onnx) == ("int8+fp16", False, False)
    assert (high.source, high.builder_flags, high.precision, high.fp16_onnx) == ("high", ("FP16",), "fp16", False)


def test_tensorrt11_plan_is_strongly_typed_with_fp16_onnx():
    f = detect_features(fake_trt_namespace("11.0.1"))
    assert not f.weakly_typed
    int8 = plan_variant(f, "int8", GPU)
    high = plan_variant(f, "high", GPU)
    assert int8.builder_flags == () and int8.network_flags == ("STRONGLY_TYPED",)
    assert (int8.precision, int8.fp16_onnx) == ("int8+fp32", False)
    assert (high.precision, high.fp16_onnx, high.builder_flags) == ("fp16", True, ())
    # a later TensorRT without even the (ignored) STRONGLY_TYPED flag still plans a strong build
    bare = SimpleNamespace(__version__="12.0", BuilderFlag=SimpleNamespace(GPU_FALLBACK=0),
                           NetworkDefinitionCreationFlag=SimpleNamespace())
    p = plan_variant(detect_features(bare), "high", GPU)
    assert p.strongly_typed and p.network_flags == () and p.fp16_onnx


def test_trt_plan_decides_by_feature_not_version_string():
    # "10.x" that lacks INT8 (hypothetical trimmed build) must not get weak-typing flags
    ns = fake_trt_namespace("10.3.0")
    del ns.BuilderFlag.INT8
    assert plan_variant(detect_features(ns), "int8", GPU).builder_flags == ()
    # "11.x"-labelled module that still has the flags is treated as weakly typed
    ns11 = fake_trt_namespace("10.3.0")
    ns11.__version__ = "11.9.9"
    assert plan_variant(detect_features(ns11), "int8", GPU).builder_flags == ("INT8", "FP16")


def test_tensorrt_dla_plan_adds_gpu_fallback_only_when_asked_and_available():
    f = detect_features(fake_trt_namespace("10.3.0"))
    assert plan_variant(f, "int8", DLA0).builder_flags == ("INT8", "FP16", "GPU_FALLBACK")
    strict = Placement("dla", 1, gpu_fallback=False)
    assert plan_variant(f, "int8", strict).builder_flags == ("INT8", "FP16")
    ns = fake_trt_namespace("10.3.0")
    del ns.BuilderFlag.GPU_FALLBACK
    with pytest.raises(BackendError, match="no BuilderFlag.GPU_FALLBACK"):
        plan_variant(detect_features(ns), "int8", DLA0)
    with pytest.raises(ConfigError, match="cannot run TensorRT"):
        plan_variant(f, "high", Placement("cpu"))
    with pytest.raises(ConfigError, match="unknown TensorRT variant"):
        plan_variant(f, "fp8", GPU)


def test_tensorrt_placement_plan_parse_and_validate():
    plan = parse_placement_plan("int8=dla:0, high=gpu")
    assert plan == {"int8": Placement("dla", 0, True), "high": Placement("gpu", -1, True)}
    assert parse_placement_plan("high=dla:1")["int8"] == Placement("gpu")
    assert validate_placements(plan, num_dla_cores=2) == plan
    with pytest.raises(ConfigError, match="DLA cores 0 and 1 only"):
        parse_placement_plan("int8=dla:2")
    with pytest.raises(ConfigError, match="VARIANT=PLACEMENT"):
        parse_placement_plan("fp16=gpu")
    with pytest.raises(ConfigError, match="twice"):
        parse_placement_plan("int8=gpu,int8=dla:0")
    with pytest.raises(ConfigError, match="this machine has no DLA cores"):
        validate_placements(plan, num_dla_cores=0)  # x86 dGPU
    with pytest.raises(ConfigError, match=r"dla:1 but this machine has DLA cores 0\.\.0"):
        validate_placements({"high": Placement("dla", 1)}, num_dla_cores=1)
    with pytest.raises(ConfigError, match="cpu is not a TensorRT device"):
        validate_placements({"int8": Placement("cpu")}, num_dla_cores=2)
