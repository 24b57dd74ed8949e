"""TensorRT optimisation profiles: the input shapes an engine is built for and run with.

Pure Python: :func:`make_profile` for batch and rectangular ("rect") inputs, static for DLA;
:func:`rect_shape` (the letterbox shape of the rect policy) and :func:`run_batch_size` (the batch
an engine runs a request with, padded for static engines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dpa_perception.backends.base import Placement
from dpa_perception.core.errors import BackendError, ConfigError


@dataclass(frozen=True)
class ShapeProfile:
    """min / opt / max input shape (NCHW) of one TensorRT optimisation profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)) or not self.min:
            raise ConfigError(f"profile shapes differ in rank: {self.min} {self.opt} {self.max}")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if lo < 1 or not (lo <= mid <= hi):
                raise ConfigError(
                    f"profile needs 1 <= min <= opt <= max per dimension, got "
                    f"min {list(self.min)}, opt {list(self.opt)}, max {list(self.max)}"
                )

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    @property
    def max_batch(self) -> int:
        return self.max[0]

    def covers(self, shape: Sequence[int]) -> bool:
        """Whether a concrete input shape lies inside min..max."""
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max)
        )

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> ShapeProfile:
        try:
            return ShapeProfile(
                tuple(int(v) for v in d["min"]),
                tuple(int(v) for v in d["opt"]),
                tuple(int(v) for v in d["max"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"malformed shape profile {d!r}: {exc}") from exc

    def describe(self) -> str:
        def fmt(s: tuple[int, ...]) -> str:
            return "x".join(str(v) for v in s)

        if self.is_static:
            return f"static {fmt(self.min)}"
        return f"{fmt(self.min)} .. {fmt(self.opt)} .. {fmt(self.max)}"


def round_up(value: int, multiple: int) -> int:
    return ((int(value) + multiple - 1) // multiple) * multiple


def make_profile(
    input_hw: Sequence[int],
    *,
    max_batch: int,
    opt_batch: int | None = None,
    dynamic_batch: bool = True,
    dynamic_hw: bool = False,
    placement: Placement | None = None,
    channels: int = 3,
    stride: int = 32,
    max_aspect: int = 4,
) -> ShapeProfile:
    """The optimisation profile of one engine.

    * batch: ``1 .. opt_batch (default max_batch) .. max_batch`` when the model's batch is dynamic.
    * H, W: the model's ``input_hw`` as opt and max. With ``dynamic_hw`` the minimum of each side is
      ``input side / max_aspect`` rounded up to the stride, so every "rect" letterbox shape (long side
      = the model side, short side a stride multiple, aspect up to ``max_aspect``:1) and the square
      shape are inside the profile, while the tuner still optimises for the square shape.
    * DLA does not support dynamic dimensions (TensorRT "DLA Supported Layers and Restrictions":
      profile min, opt and max must be equal), so a DLA placement gets the static shape
      ``max_batch x C x H x W``; the session pads smaller batches.
    """
    if len(input_hw) != 2:
        raise ConfigError(f"input_hw must be [height, width], got {list(input_hw)}")
    h, w = int(input_hw[0]), int(input_hw[1])
    if h < 1 or w < 1:
        raise ConfigError(f"input_hw must be positive, got {list(input_hw)}")
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    opt = max_batch if opt_batch is None else int(opt_batch)
    if not 1 <= opt <= max_batch:
        raise ConfigError(f"opt_batch must be in 1..max_batch ({max_batch}), got {opt_batch}")
    if not dynamic_batch and max_batch != 1:
        raise ConfigError(
            f"the model's batch dimension is static (1) but max_batch is {max_batch}: "
            "rebuild the build folder with a symbolic batch"
        )
    full = (max_batch, channels, h, w)
    if placement is not None and placement.device == "dla":
        return ShapeProfile(full, full, full)
    if dynamic_hw:
        min_h = min(h, max(stride, round_up(-(-h // max_aspect), stride)))
        min_w = min(w, max(stride, round_up(-(-w // max_aspect), stride)))
    else:
        min_h, min_w = h, w
    min_b = 1 if dynamic_batch else max_batch
    return ShapeProfile((min_b, channels, min_h, min_w), (opt, channels, h, w), full)


def rect_shape(
    image_hw: Sequence[int], input_hw: Sequence[int], stride: int = 32
) -> tuple[int, int]:
    """The letterbox input shape of an image under the "rect" policy (long side = model side)."""
    ih, iw = int(image_hw[0]), int(image_hw[1])
    h, w = int(input_hw[0]), int(input_hw[1])
    r = min(h / ih, w / iw)
    return (min(h, round_up(max(1, round(ih * r)), stride)), min(w, round_up(max(1, round(iw * r)), stride)))


def run_batch_size(profile: ShapeProfile, n: int) -> int:
    """The batch size an engine is run with for ``n`` frames (static engines are padded)."""
    if n < 1:
        raise BackendError(f"batch of {n} frames")
    if n > profile.max_batch:
        raise BackendError(
            f"batch of {n} frames exceeds the engine's maximum batch {profile.max_batch}: "
            "rebuild with a larger --max-batch or lower the node's batch size"
        )
    return profile.max_batch if profile.is_static else max(n, profile.min[0])

