"""CPU tests of TensorRT optimisation profiles: batch, rect input shapes and static DLA profiles."""

from __future__ import annotations

import pytest
from trt_fakes import DLA0

from dpa_perception.backends.tensorrt.profiles import make_profile, rect_shape
from dpa_perception.core.errors import ConfigError


def test_tensorrt_profiles_for_batch_rect_and_dla():
    p = make_profile([416, 416], max_batch=8, opt_batch=4, dynamic_hw=True)
    assert p.min == (1, 3, 128, 128) and p.opt == (4, 3, 416, 416) and p.max == (8, 3, 416, 416)
    # every test image's rect letterbox shape lies inside the profile, so does the square one
    for hw in [(540, 960), (364, 500), (720, 1280), (375, 1242), (900, 1600), (576, 768), (416, 416)]:
        r = rect_shape(hw, (416, 416))
        assert max(r) == 416 and r[0] % 32 == 0 and r[1] % 32 == 0
        assert p.covers((1, 3) + r) and p.covers((8, 3) + r)
    assert rect_shape((375, 1242), (416, 416)) == (128, 416)
    assert not p.covers((9, 3, 416, 416)) and not p.covers((1, 3, 96, 416))
    fixed = make_profile([416, 416], max_batch=8, opt_batch=None)
    assert fixed.min == (1, 3, 416, 416) and fixed.opt == fixed.max == (8, 3, 416, 416)
    dla = make_profile([416, 416], max_batch=8, opt_batch=2, dynamic_hw=True, placement=DLA0)
    assert dla.is_static and dla.min == (8, 3, 416, 416)
    assert make_profile([640, 384], max_batch=1, dynamic_hw=True).min == (1, 3, 160, 96)
    with pytest.raises(ConfigError, match="opt_batch"):
        make_profile([416, 416], max_batch=4, opt_batch=8)
    with pytest.raises(ConfigError, match="batch dimension is static"):
        make_profile([416, 416], max_batch=4, dynamic_batch=False)
