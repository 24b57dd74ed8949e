"""Cheap per-frame visibility estimate: fog, low light, glare, blur/rain and lens blockage.

The frame is downscaled by an integer factor to about ``VisibilityConfig.width`` pixels
(INTER_AREA) and a handful of statistics are taken: about 1 ms for a 960x540 frame.  Each
condition score is a logistic function of one or two features,
``sigmoid(sum((feature - ref) / scale))``, so every ``*_ref`` field of
:class:`VisibilityConfig` is the feature value where that evidence is neutral and every
``*_scale`` how fast it saturates; tune them on site from ``VisibilityReport.features``.  The
defaults were fitted on real degraded photos (RTTS fog, BDD100K night) as well as on
:mod:`dpa_perception.demo.weather` fog, since thresholds fitted on synthetic fog alone do not
transfer to real fog.

Features and what they catch:

* ``haze_ratio`` (mean dark channel / mean luminance: near 1 when haze washes out colour
  and shadows) with ``rms_contrast`` (falls with fog) -> ``fog``;
* ``luminance`` and ``dark_fraction`` (near-black pixels) -> ``low_light``;
* ``bright_fraction`` (clipped pixels) -> ``glare``;
* ``sharpness_ratio`` (Laplacian energy at native resolution over that two octaves down, on
  a centre crop: falls with blur) and ``gradient_anisotropy`` (horizontal / vertical
  gradient energy: rises with near-vertical rain streaks) -> ``blur``; rain remains the
  weakest cue;
* ``dark_flat_fraction`` (cells both textureless and darkish, like mud, a leaf or a cover on
  the lens; bright flat sky and fog do not count) -> ``blockage``, discounted by the
  low-light score since night also makes large dark flat areas.

``dark_channel`` and ``laplacian_var`` are reported too, for tuning.  The degradation is the
largest score.  An external weather report (visibility, precipitation) can only raise the
fog and blur scores, and only while it is fresh.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields

import cv2
import numpy as np

from dpa_perception.core.errors import ConfigError, ImageError

LABELS: tuple[str, ...] = ("clear", "fog", "night", "glare", "rain_blur", "blockage", "unknown")
_CONDITION_LABEL = {
    "fog": "fog",
    "low_light": "night",
    "glare": "glare",
    "blur": "rain_blur",
    "blockage": "blockage",
}


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


@dataclass(frozen=True)
class VisibilityConfig:
    """Every threshold of the estimator (see the module docstring for the score form)."""

    width: int = 160  # analysis width: frames shrink by the integer factor closest to it
    dark_channel_patch: int = 5  # odd min-filter size of the dark channel, analysis pixels
    # fog = sigmoid((haze_ratio - ref) / scale + ln(contrast_ref / rms_contrast) / scale)
    fog_haze_ref: float = 0.92
    fog_haze_scale: float = 0.12
    fog_contrast_ref: float = 0.10
    fog_contrast_scale: float = 0.97
    # low_light = sigmoid((ref - luminance) / scale + (dark_fraction - ref) / scale)
    night_luminance_ref: float = 0.20
    night_luminance_scale: float = 0.05
    night_dark_level: float = 0.10  # a pixel darker than this (0..1) is near-black
    night_dark_fraction_ref: float = 0.50
    night_dark_fraction_scale: float = 0.20
    # glare = sigmoid((bright_fraction - ref) / scale)
    glare_bright_level: float = 0.98  # a pixel at least this bright (0..1) is clipped
    glare_fraction_ref: float = 0.15
    glare_fraction_scale: float = 0.04
    # blur = sigmoid(max((ref - sharpness_ratio) / scale, (anisotropy - ref) / scale))
    blur_crop: int = 256  # side of the native-resolution centre crop for sharpness
    blur_noise_floor: float = 0.5  # mean |Laplacian| (grey levels) left by noise and JPEG
    blur_sharpness_ref: float = 0.45
    blur_sharpness_scale: float = 0.05
    rain_anisotropy_ref: float = 1.00
    rain_anisotropy_scale: float = 0.08
    # blockage = sigmoid((dark_flat_fraction - ref) / scale) * (1 - low_light)
    blockage_cell: int = 10  # cell side in analysis pixels
    blockage_texture_level: float = 0.01  # a cell whose luminance std is below this is flat
    blockage_dark_level: float = 0.40  # ... and counts when its mean luminance is below this
    blockage_fraction_ref: float = 0.14
    blockage_fraction_scale: float = 0.03
    # degradation at or above this names the worst condition in the label, else "clear"
    label_threshold: float = 0.5
    # external weather report
    external_timeout_s: float = 60.0
    external_fog_visibility_m: float = 200.0  # fog score 1 at or below this visibility
    external_clear_visibility_m: float = 1000.0  # fog score 0 at or above (log-linear between)
    external_precipitation_score: float = 0.6  # blur score floor while precipitation reported

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"visibility.{f.name} must be a finite number, got {v!r}")
            if f.name.endswith("_scale") or f.name == "external_timeout_s":
                _require(v > 0, f.name, "> 0", v)
        for name, low in (("width", 16), ("blur_crop", 32), ("blockage_cell", 2)):
            v = getattr(self, name)
            _require(isinstance(v, int) and v >= low, name, f"an integer >= {low}", v)
        p = self.dark_channel_patch
        _require(isinstance(p, int) and p >= 1 and p % 2 == 1, "dark_channel_patch",
                 "an odd integer >= 1", p)
        for name in ("night_dark_level", "night_dark_fraction_ref", "glare_bright_level",
                     "glare_fraction_ref", "blockage_texture_level", "blockage_dark_level",
                     "blockage_fraction_ref", "external_precipitation_score"):
            _require(0.0 <= getattr(self, name) <= 1.0, name, "in [0, 1]", getattr(self, name))
        _require(0.0 < self.label_threshold < 1.0, "label_threshold", "in (0, 1)",
                 self.label_threshold)
        _require(self.fog_contrast_ref > 0, "fog_contrast_ref", "> 0", self.fog_contrast_ref)
        _require(self.blur_noise_floor >= 0, "blur_noise_floor", ">= 0", self.blur_noise_floor)
        _require(0 < self.external_fog_visibility_m < self.external_clear_visibility_m,
                 "external_fog_visibility_m", "> 0 and < external_clear_visibility_m",
                 self.external_fog_visibility_m)


def _require(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"visibility.{name} must be {rule}, got {value!r}")


@dataclass(frozen=True)
class VisibilityReport:
    """Per-condition scores in [0, 1], the overall degradation (their maximum) and its label."""

    fog: float
    low_light: float
    glare: float
    blur: float
    blockage: float
    degradation: float
    label: str  # one of LABELS
    features: dict[str, float] = field(default_factory=dict)
    external_used: bool = False
    external_age_s: float | None = None  # age of the last external report, None if none given

    @staticmethod
    def unknown() -> VisibilityReport:
        """The report for a frame that cannot be assessed (too small): no evidence of degradation."""
        return VisibilityReport(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "unknown")

    @property
    def scores(self) -> dict[str, float]:
        """The per-condition scores by name."""
        return {"fog": self.fog, "low_light": self.low_light, "glare": self.glare,
                "blur": self.blur, "blockage": self.blockage}


@dataclass(frozen=True)
class _External:
    visibility_m: float | None
    precipitation: bool
    stamp_s: float


class VisibilityEstimator:
    """Scores the visibility of BGR frames; optionally fuses an external weather report."""

    def __init__(self, config: VisibilityConfig | None = None) -> None:
        self.config = config if config is not None else VisibilityConfig()
        p = self.config.dark_channel_patch
        self._patch = cv2.getStructuringElement(cv2.MORPH_RECT, (p, p))
        self._external: _External | None = None

    def set_external(self, visibility_m: float | None, precipitation: bool,
                     stamp_s: float) -> None:
        """Record an external weather report (e.g. a road weather station) taken at ``stamp_s``.

        ``visibility_m`` None means the report carries no visibility.

        ``stamp_s`` must be on the clock later passed to :meth:`estimate` as ``now_s``.
        """
        vis = None if visibility_m is None else _finite(visibility_m, "external visibility")
        if vis is not None and vis < 0:
            raise ConfigError(f"external visibility must be >= 0 m, got {visibility_m!r}")
        stamp = _finite(stamp_s, "external report stamp")
        self._external = _External(vis, bool(precipitation), stamp)

    def features(self, img: np.ndarray) -> dict[str, float]:
        """Raw image statistics (all unitless, luminance-like ones in 0..1)."""
        bgr = _as_bgr(img)
        cfg = self.config
        h, w = bgr.shape[:2]
        # an integer factor keeps INTER_AREA on its fast box-filter path
        k = max(1, min(round(w / cfg.width), min(h, w) // 8))
        small = bgr
        if k > 1:
            small = cv2.resize(bgr[: h - h % k, : w - w % k], (w // k, h // k),
                               interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        b, g, r = cv2.split(small)
        dark_channel = float(cv2.erode(cv2.min(cv2.min(b, g), r), self._patch).mean())
        mean, std = cv2.meanStdDev(gray)
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1)
        grad_x, grad_y = float(cv2.norm(gx, cv2.NORM_L1)), float(cv2.norm(gy, cv2.NORM_L1))
        lap = cv2.Laplacian(gray, cv2.CV_32F)
        return {
            "luminance": float(mean[0, 0]) / 255.0,
            "dark_channel": dark_channel / 255.0,
            "haze_ratio": dark_channel / max(float(mean[0, 0]), 1.0),
            "rms_contrast": float(std[0, 0]) / 255.0,
            "laplacian_var": float(lap.var()) / 255.0**2,
            "dark_fraction": _fraction(gray < cfg.night_dark_level * 255.0),
            "bright_fraction": _fraction(gray >= cfg.glare_bright_level * 255.0),
            "sharpness_ratio": _sharpness_ratio(bgr, cfg.blur_crop, cfg.blur_noise_floor),
            "gradient_anisotropy": grad_x / max(grad_y, 1.0),
            "dark_flat_fraction": _dark_flat_fraction(gray, cfg.blockage_cell,
                                                      cfg.blockage_texture_level,
                                                      cfg.blockage_dark_level),
        }

    def estimate(self, img: np.ndarray, now_s: float | None = None) -> VisibilityReport:
        """Score one frame; ``now_s`` (default: wall clock) ages the external report."""
        cfg = self.config
        f = self.features(img)
        fog = _sigmoid((f["haze_ratio"] - cfg.fog_haze_ref) / cfg.fog_haze_scale
                       + math.log(cfg.fog_contrast_ref / max(f["rms_contrast"], 1e-4))
                       / cfg.fog_contrast_scale)
        low_light = _sigmoid(
            (cfg.night_luminance_ref - f["luminance"]) / cfg.night_luminance_scale
            + (f["dark_fraction"] - cfg.night_dark_fraction_ref) / cfg.night_dark_fraction_scale)
        glare = _sigmoid(
            (f["bright_fraction"] - cfg.glare_fraction_ref) / cfg.glare_fraction_scale)
        blur = _sigmoid(max(
            (cfg.blur_sharpness_ref - f["sharpness_ratio"]) / cfg.blur_sharpness_scale,
            (f["gradient_anisotropy"] - cfg.rain_anisotropy_ref) / cfg.rain_anisotropy_scale))
        external_used, age = False, None
        ext = self._external
        if ext is not None:
            age = (time.time() if now_s is None else float(now_s)) - ext.stamp_s
            if abs(age) < cfg.external_timeout_s:
                external_used = True
                if ext.visibility_m is not None:
                    fog = max(fog, self._external_fog(ext.visibility_m))
                if ext.precipitation:
                    blur = max(blur, cfg.external_precipitation_score)
        blockage = _sigmoid((f["dark_flat_fraction"] - cfg.blockage_fraction_ref)
                            / cfg.blockage_fraction_scale) * (1.0 - low_light)
        scores = {"fog": fog, "low_light": low_light, "glare": glare, "blur": blur,
                  "blockage": blockage}
        worst = max(scores, key=lambda k: scores[k])
        degradation = scores[worst]
        label = _CONDITION_LABEL[worst] if degradation >= cfg.label_threshold else "clear"
        return VisibilityReport(fog, low_light, glare, blur, blockage, degradation, label, f,
                                external_used, age)

    def _external_fog(self, visibility_m: float) -> float:
        lo, hi = self.config.external_fog_visibility_m, self.config.external_clear_visibility_m
        v = min(max(visibility_m, lo), hi)
        return math.log(hi / v) / math.log(hi / lo)


def _finite(value: float, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return v


def _as_bgr(img: np.ndarray) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.size == 0:
        raise ImageError("empty image")
    if img.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim != 3 or img.shape[2] != 3:
        raise ImageError(f"expected an H x W x 3 BGR or H x W grayscale image, got {img.shape}")
    if min(img.shape[:2]) < 8:
        raise ImageError(f"image too small to estimate visibility: {img.shape[1]}x{img.shape[0]}")
    return img


def _fraction(mask: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) / mask.size


def _sharpness_ratio(bgr: np.ndarray, crop: int, noise_floor: float) -> float:
    """Mean |Laplacian| (grey levels) at native resolution over that two octaves down.

    Taken on a centre crop of at most ``crop`` x ``crop`` native pixels.  Blur removes the
    fine scale first; ``noise_floor`` discounts the fine-scale energy of noise and JPEG
    blocks, and a regulariser of one grey level makes a flat crop read as 1 (no evidence).
    """
    h, w = bgr.shape[:2]
    ch, cw = min(h, crop), min(w, crop)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    gray = cv2.cvtColor(bgr[y0:y0 + ch, x0:x0 + cw], cv2.COLOR_BGR2GRAY)
    fine = float(np.abs(cv2.Laplacian(gray, cv2.CV_32F)).mean())
    coarse = float(np.abs(cv2.Laplacian(cv2.pyrDown(cv2.pyrDown(gray)), cv2.CV_32F)).mean())
    return (max(fine - noise_floor, 0.0) + 1.0) / (coarse + 1.0)


def _dark_flat_fraction(gray: np.ndarray, cell: int, flat_level: float,
                        dark_level: float) -> float:
    """Fraction of ``cell``-sized blocks with std < ``flat_level`` and mean < ``dark_level`` (0..1)."""
    cell = min(cell, *gray.shape)
    rows, cols = gray.shape[0] // cell, gray.shape[1] // cell
    blocks = gray[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell).astype(np.float32)
    flat = blocks.std(axis=(1, 3)) < flat_level * 255.0
    return _fraction(flat & (blocks.mean(axis=(1, 3)) < dark_level * 255.0))
