"""Deterministic synthetic weather degradations for tests, evaluation and rosbag replay.

Every function takes a BGR ``uint8`` image (H x W x 3, or grayscale H x W, returned as
grayscale), a strength in [0, 1] where 0 returns an unchanged copy and 1 is heavy, and a
``seed``: the same seed gives the same output.  All work is vectorised numpy/OpenCV, a few
milliseconds per 960x540 frame, so replay can apply them to every frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal, cast

import cv2
import numpy as np

from dpa_perception.core.errors import ConfigError, ImageError

WeatherKind = Literal["none", "fog", "rain", "night", "glare"]
WEATHER_KINDS: tuple[WeatherKind, ...] = ("none", "fog", "rain", "night", "glare")

# Standard-normal quantiles of 256 equiprobable bins: random bytes through this table are
# Gaussian noise, many times cheaper than Generator.standard_normal per pixel.
_GAUSS_LUT = np.array([NormalDist().inv_cdf((i + 0.5) / 256.0) for i in range(256)], np.float32)
_GAUSS_LUT /= _GAUSS_LUT.std()


def _check_strength(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return v


def _as_bgr(img: np.ndarray) -> tuple[np.ndarray, bool]:
    """Validate an image; return it as BGR and whether it was grayscale."""
    if not isinstance(img, np.ndarray) or img.size == 0:
        raise ImageError("empty image")
    if img.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), True
    if img.ndim != 3 or img.shape[2] != 3:
        raise ImageError(f"expected an H x W x 3 BGR or H x W grayscale image, got shape {img.shape}")
    return img, False


def _restore(out: np.ndarray, gray: bool, like: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).reshape(like.shape) if gray else out


def add_fog(img: np.ndarray, density: float, seed: int = 0) -> np.ndarray:
    """Atmospheric scattering ``I = J t + A (1 - t)`` with ``t = exp(-beta d)``.

    The depth proxy ``d`` suits a camera looking down a road: it grows toward the top of the
    image like the distance of a ground plane (about 3.5x bottom to top), with mild
    low-frequency noise.  The airlight is a grey of 0.80-0.95 (drawn from ``seed``).  At
    density 1 the bottom rows keep about 25 % of their contrast and the top under 1 %.
    """
    density = _check_strength("fog density", density)
    bgr, gray = _as_bgr(img)
    if density == 0.0:
        return img.copy()
    rng = np.random.default_rng(seed)
    h, w = bgr.shape[:2]
    # the transmission is smooth: build it at 1/8 resolution and upsample
    sh, sw = max(2, h // 8), max(2, w // 8)
    y = np.linspace(0.0, 1.0, sh, dtype=np.float32)[:, None]
    depth = 1.4 / (y + 0.4)  # 1 at the bottom row, 3.5 at the top row
    wobble = cv2.resize(rng.uniform(-1.0, 1.0, (4, 6)).astype(np.float32), (sw, sh),
                        interpolation=cv2.INTER_CUBIC)
    t_small = cv2.exp(depth * (1.0 + 0.12 * wobble) * np.float32(-1.4 * density))
    t = cv2.resize(t_small, (w, h), interpolation=cv2.INTER_LINEAR)
    airlight = np.full_like(bgr, round(255 * rng.uniform(0.80, 0.95)))
    out = cv2.blendLinear(bgr, airlight, t, 1.0 - t)
    return _restore(out, gray, img)


def add_rain(img: np.ndarray, intensity: float, seed: int = 0) -> np.ndarray:
    """Rain: slanted motion-blurred streaks over a blurred, darkened, slightly veiled scene."""
    intensity = _check_strength("rain intensity", intensity)
    bgr, gray = _as_bgr(img)
    if intensity == 0.0:
        return img.copy()
    rng = np.random.default_rng(seed)
    h, w = bgr.shape[:2]
    n = max(1, int(intensity * h * w / 150))
    length = max(h, w) * (0.015 + 0.025 * intensity)
    angle = np.deg2rad(rng.uniform(-20.0, 20.0)) + rng.normal(0.0, 0.04, n)
    lengths = length * rng.uniform(0.5, 1.5, n)
    start = rng.uniform((-0.1 * w, -0.1 * h), (1.1 * w, 1.1 * h), (n, 2))
    end = start + np.stack([np.sin(angle), np.cos(angle)], 1) * lengths[:, None]
    segments = np.round(np.stack([start, end], 1)).astype(np.int32)
    canvas = np.zeros((h, w), np.uint8)
    cv2.polylines(canvas, list(segments), False, 255, 1, cv2.LINE_AA)
    streaks = cv2.GaussianBlur(canvas, (3, 3), 0)
    scene = cv2.GaussianBlur(bgr, (0, 0), 0.6 + 1.4 * intensity)
    out = cv2.addWeighted(scene, 1.0 - 0.35 * intensity, cv2.merge([streaks] * 3),
                          0.2 + 0.2 * intensity, 20.0 * intensity)
    return _restore(out, gray, img)


def add_night(img: np.ndarray, darkness: float, seed: int = 0) -> np.ndarray:
    """Night: gamma darkening with a slight blue tint plus Gaussian read and shot noise.

    Darkness 1 brings a daylight street to a mean luminance of about 0.05, like a real night
    frame.
    """
    darkness = _check_strength("night darkness", darkness)
    bgr, gray = _as_bgr(img)
    if darkness == 0.0:
        return img.copy()
    rng = np.random.default_rng(seed)
    x = np.arange(256, dtype=np.float32) / 255.0
    gamma, gain = 1.0 + 1.5 * darkness, 1.0 - 0.7 * darkness
    tint = np.array([1.0, 1.0 - 0.05 * darkness, 1.0 - 0.12 * darkness], np.float32)  # B, G, R
    level = np.round(255.0 * gain * x[:, None] ** gamma * tint).astype(np.uint8)
    signal = cv2.LUT(bgr, level.reshape(1, 256, 3))
    # noisy value for every (signal, noise byte) pair: one table look-up per pixel
    v = np.arange(256, dtype=np.float32)[:, None]
    read_sigma, shot_gain = 1.0 + 3.0 * darkness, 0.5 + 1.0 * darkness
    table = np.clip(np.round(v + np.sqrt(v * shot_gain + read_sigma**2) * _GAUSS_LUT), 0, 255)
    index = signal.astype(np.uint16)
    index <<= 8
    index |= np.frombuffer(rng.bytes(bgr.size), np.uint8).reshape(bgr.shape)
    out = table.astype(np.uint8).ravel().take(index)
    return _restore(out, gray, img)


def add_glare(img: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    """Glare: over-exposure plus a bright bloom (low sun or headlight) and veiling light."""
    strength = _check_strength("glare strength", strength)
    bgr, gray = _as_bgr(img)
    if strength == 0.0:
        return img.copy()
    rng = np.random.default_rng(seed)
    h, w = bgr.shape[:2]
    exposure = np.clip(np.arange(256, dtype=np.float32) * (1.0 + 0.8 * strength), 0, 255)
    bright = cv2.LUT(bgr, exposure.astype(np.uint8))
    cx, cy = rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.05 * h, 0.4 * h)
    sigma = (0.08 + 0.2 * strength) * w
    gx = np.exp(-0.5 * ((np.arange(w, dtype=np.float32) - cx) / sigma) ** 2)
    gy = np.exp(-0.5 * ((np.arange(h, dtype=np.float32) - cy) / sigma) ** 2)
    bloom = np.minimum(gy[:, None] * gx[None, :] * (1.5 * strength) + 0.15 * strength, 1.0)
    out = cv2.blendLinear(bright, np.full_like(bgr, 255), 1.0 - bloom, bloom)
    return _restore(out, gray, img)


_APPLY: dict[str, Callable[[np.ndarray, float, int], np.ndarray]] = {
    "fog": add_fog,
    "rain": add_rain,
    "night": add_night,
    "glare": add_glare,
}


@dataclass(frozen=True)
class WeatherSpec:
    """A weather to apply over a replay: constant strength, or a ramp from 0 to 1 over the bag."""

    kind: WeatherKind
    strength: float = 0.0
    ramp: bool = False

    def __post_init__(self) -> None:
        if self.kind not in WEATHER_KINDS:
            raise ConfigError(f"unknown weather kind {self.kind!r}")
        _check_strength("weather strength", self.strength)

    def strength_at(self, progress: float) -> float:
        """Strength at ``progress`` in [0, 1] (position in the bag); constants ignore it."""
        p = float(progress)
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"progress must be in [0, 1], got {progress!r}")
        if self.kind == "none":
            return 0.0
        return p if self.ramp else self.strength

    def apply(self, img: np.ndarray, progress: float = 0.0, seed: int = 0,
              frame: int = 0) -> np.ndarray:
        """Degrade ``img`` at ``progress``; ``none`` returns the input image itself.

        ``seed`` fixes what must stay put over a replay (fog airlight and texture, flare
        position); ``frame`` (e.g. the frame index) re-draws what changes every frame (rain
        streaks, sensor noise).  Both are non-negative integers.
        """
        strength = self.strength_at(progress)
        if self.kind == "none":
            return img
        if self.kind in ("rain", "night"):
            seed = int(np.random.SeedSequence([seed, frame]).generate_state(1)[0])
        return _APPLY[self.kind](img, strength, seed)

    def __str__(self) -> str:
        if self.kind == "none":
            return "none"
        return f"{self.kind}-ramp" if self.ramp else f"{self.kind}:{self.strength:g}"


_SPEC_HELP = (
    "expected none, fog-ramp, rain-ramp, night-ramp, glare-ramp, fog, rain, night, glare "
    "or KIND:STRENGTH with STRENGTH in [0, 1] (e.g. fog:0.6)"
)


def parse_weather(spec: str) -> WeatherSpec:
    """Parse a ``--weather`` spec.

    ``none``; ``KIND-ramp`` (0 at the start of the bag to 1 at the end); ``KIND`` alone
    (constant 1.0, heavy); ``KIND:STRENGTH`` (constant), for KIND in fog, rain, night, glare.
    Raises ConfigError on anything else.
    """
    text = spec.strip().lower() if isinstance(spec, str) else ""
    if text == "none":
        return WeatherSpec("none")
    name, sep, value = text.partition(":")
    if name.endswith("-ramp") and not sep and name[: -len("-ramp")] in _APPLY:
        return WeatherSpec(cast(WeatherKind, name[: -len("-ramp")]), 1.0, ramp=True)
    if name not in _APPLY:
        raise ConfigError(f"unknown weather spec {spec!r}: {_SPEC_HELP}")
    if not sep:
        return WeatherSpec(cast(WeatherKind, name), 1.0)
    try:
        strength = float(value)
    except ValueError:
        raise ConfigError(f"bad strength in weather spec {spec!r}: {_SPEC_HELP}") from None
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"weather strength out of range in {spec!r}: {_SPEC_HELP}")
    return WeatherSpec(cast(WeatherKind, name), strength)

