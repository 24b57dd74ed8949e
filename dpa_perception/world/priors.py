"""Class priors: typical object dimensions, association groups and the ground-contact correction.

The ground-contact pixel of a detection is the bottom centre of its box. For an object standing on
the ground that pixel sees the *near* edge of the object's footprint, so the footprint centre lies
further along the viewing ray (on the ground, away from the camera) by about half the footprint's
extent along that ray. For a footprint of length ``L`` (along the heading) and width ``W`` seen at an
angle ``a`` between the ray and the heading, that extent is ``L |cos a| + W |sin a|``. Without a
heading the class's along-road extent (its length: roadside cameras look along the road) is used,
with a variance wide enough to cover any heading.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Association groups: a track is only matched with detections of its group.
GROUP_VEHICLE = "vehicle"
GROUP_PERSON = "person"
GROUP_TWO_WHEELER = "two_wheeler"


@dataclass(frozen=True)
class ClassPrior:
    """Typical footprint and height of a class (metres) and their standard deviations."""

    name: str
    group: str
    length: float  # along the heading
    width: float
    height: float
    length_std: float
    width_std: float
    height_std: float
    speed_std: float  # m/s: spread of the class's speeds (initial velocity uncertainty of a new track)
    contact: float = 1.0  # footprint centre at contact * half the extent along the ray (ground clearance, wheels)
    # the top edge of the box, seen from above, is the object's far top edge: this far beyond the footprint
    # centre along the ray (a person's head is above it; a car's roof is half its length); NaN: not used
    top_offset: float = float("nan")
    top_std: float = 0.0


# ``contact``: measured on the demo renderer's exact boxes (benchmarks/bench_projection.py prints the
# along-ray residuals): a vehicle's lowest visible pixel lies a little inside its footprint (wheels set
# in from the bumpers, body clearance), a pedestrian's feet spread beyond the nominal half depth.
# COCO "truck" covers vans (about 5-6 m) as well as lorries.
PRIORS: dict[str, ClassPrior] = {
    "person": ClassPrior("person", GROUP_PERSON, 0.5, 0.6, 1.7, 0.15, 0.15, 0.2, 1.5, contact=1.4, top_offset=0.0,
                         top_std=0.15),
    "bicycle": ClassPrior("bicycle", GROUP_TWO_WHEELER, 1.75, 0.6, 1.1, 0.2, 0.15, 0.15, 4.0, contact=0.9),
    "motorcycle": ClassPrior("motorcycle", GROUP_TWO_WHEELER, 2.1, 0.8, 1.2, 0.25, 0.15, 0.15, 8.0),
    "car": ClassPrior("car", GROUP_VEHICLE, 4.5, 1.8, 1.5, 0.4, 0.12, 0.15, 10.0, contact=0.94, top_offset=0.8,
                      top_std=0.6),
    "bus": ClassPrior("bus", GROUP_VEHICLE, 11.5, 2.55, 3.2, 1.0, 0.1, 0.2, 8.0, contact=0.84, top_offset=5.0,
                      top_std=1.0),
    "truck": ClassPrior("truck", GROUP_VEHICLE, 6.0, 2.2, 2.8, 1.8, 0.25, 0.5, 8.0, contact=0.88, top_offset=2.6,
                        top_std=1.0),
}
# Any other class: a small generic object; it is associated only with detections of its own class.
DEFAULT_PRIOR = ClassPrior("default", "", 1.0, 1.0, 1.5, 0.5, 0.5, 0.5, 3.0)

# The box width (metres at the object's range) may change a prior dimension at most by these factors.
DIM_SCALE_MIN = 0.6
DIM_SCALE_MAX = 1.6


def class_prior(class_name: str) -> ClassPrior:
    """The prior of a class name (:data:`DEFAULT_PRIOR` for classes not in :data:`PRIORS`)."""
    return PRIORS.get(class_name, DEFAULT_PRIOR)


def class_group(class_name: str) -> str:
    """The association group of a class; a class without a group is its own group (``other:<name>``)."""
    p = PRIORS.get(class_name)
    return p.group if p is not None else f"other:{class_name}"


@dataclass(frozen=True)
class PriorTable:
    """The priors of a model's classes as arrays indexed by class id (vectorised look-ups)."""

    names: tuple[str, ...]
    group: np.ndarray  # (C,) int64 group code; equal codes may be associated
    dims: np.ndarray  # (C, 3) length, width, height
    dims_std: np.ndarray  # (C, 3)
    speed_std: np.ndarray  # (C,)
    contact: np.ndarray  # (C,) the prior's contact factor
    top: np.ndarray  # (C, 3) top_offset, top_std, height std

    @staticmethod
    def build(class_names: Sequence[str]) -> PriorTable:
        names = tuple(class_names)
        groups: dict[str, int] = {}
        code = np.array([groups.setdefault(class_group(n), len(groups)) for n in names], np.int64)
        ps = [class_prior(n) for n in names]
        dims = np.array([[p.length, p.width, p.height] for p in ps], np.float64).reshape(-1, 3)
        std = np.array([[p.length_std, p.width_std, p.height_std] for p in ps], np.float64).reshape(-1, 3)
        speed = np.array([p.speed_std for p in ps], np.float64)
        top = np.array([[p.top_offset, p.top_std, p.height_std] for p in ps], np.float64).reshape(-1, 3)
        return PriorTable(names, code, dims, std, speed, np.array([p.contact for p in ps], np.float64), top)

    def contact_of(self, class_ids: np.ndarray) -> np.ndarray:
        """The contact factor of each class id (1 for ids the model does not name)."""
        ids = np.asarray(class_ids, np.int64)
        known = (ids >= 0) & (ids < len(self.names))
        return np.where(known, self.contact[np.where(known, ids, 0)], 1.0) if len(self.names) else np.ones(len(ids))

    def lookup(self, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Group code, dims (N, 3), dims std (N, 3) and speed std of each class id.

        An id the model does not name gets the default prior and a group code of its own
        (``-1 - id``), so it is associated only with detections of the same id.
        """
        ids = np.asarray(class_ids, np.int64)
        n = len(self.names)
        known = (ids >= 0) & (ids < n)
        row = np.where(known, ids, n)  # row n of the padded tables: the default prior
        dims, std, speed = self._padded
        group = self.group[row] if known.all() else np.where(known, self.group[np.minimum(row, max(n - 1, 0))]
                                                             if n else 0, -1 - ids)  # fmt: skip
        return group, dims[row], std[row], speed[row]

    @functools.cached_property
    def _padded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """dims, dims std and speed std with the default prior appended as the last row."""
        d = DEFAULT_PRIOR
        return (np.vstack([self.dims, [d.length, d.width, d.height]]),
                np.vstack([self.dims_std, [d.length_std, d.width_std, d.height_std]]),
                np.append(self.speed_std, d.speed_std))


def adjust_dims(dims: np.ndarray, box_width_m: np.ndarray, rel_heading: np.ndarray | None = None) -> np.ndarray:
    """Prior dimensions (N, 3) adjusted by the box width in metres at the object's range (N,).

    The box width measures the footprint's extent across the viewing ray,
    ``L |sin a| + W |cos a|`` (``a``: angle between ray and heading; without a heading the object
    is taken to be seen along its length, ``a = 0``). The dimension that dominates that extent is
    solved for, within [:data:`DIM_SCALE_MIN`, :data:`DIM_SCALE_MAX`] times its prior.
    """
    out = np.array(dims, np.float64, copy=True)
    if len(out) == 0:
        return out
    a = np.zeros(len(out)) if rel_heading is None else np.asarray(rel_heading, np.float64)
    s, c = np.abs(np.sin(a)), np.abs(np.cos(a))
    L, W = out[:, 0], out[:, 1]
    bw = np.asarray(box_width_m, np.float64)
    broadside = s > c
    with np.errstate(divide="ignore", invalid="ignore"):
        L_est = np.where(broadside, (bw - W * c) / np.maximum(s, 1e-6), L)
        W_est = np.where(broadside, W, (bw - L * s) / np.maximum(c, 1e-6))
    out[:, 0] = np.clip(np.where(np.isfinite(L_est), L_est, L), L * DIM_SCALE_MIN, L * DIM_SCALE_MAX)
    out[:, 1] = np.clip(np.where(np.isfinite(W_est), W_est, W), W * DIM_SCALE_MIN, W * DIM_SCALE_MAX)
    return out


def contact_offset(dims: np.ndarray, dims_std: np.ndarray, ray_angle: np.ndarray,
                   heading: np.ndarray | None = None, heading_std: np.ndarray | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Distance (m) from the ground-contact point to the footprint centre along the ray, and its variance.

    ``dims``/``dims_std``: (N, 3) length, width, height; ``ray_angle``: (N,) direction of the viewing
    ray on the ground (rad, CCW from +x). With ``heading`` (N,) and ``heading_std`` (N,) the
    extent is ``L |cos a| + W |sin a|`` (``a = ray - heading``), its variance from the dimension
    spreads and the heading uncertainty (first order). A NaN heading, or none, means unknown:
    half the length, with a variance covering any heading (the offset lies in [W/2, L/2]).
    """
    L, W = dims[:, 0], dims[:, 1]
    sL, sW = dims_std[:, 0], dims_std[:, 1]
    unknown_off = 0.5 * L
    unknown_var = (0.5 * np.abs(L - W)) ** 2 / 3.0 + (0.5 * sL) ** 2
    if heading is None:
        return unknown_off, unknown_var
    h = np.asarray(heading, np.float64)
    hs = np.zeros_like(h) if heading_std is None else np.asarray(heading_std, np.float64)
    a = np.asarray(ray_angle, np.float64) - np.nan_to_num(h)
    c, s = np.abs(np.cos(a)), np.abs(np.sin(a))
    known_off = 0.5 * (L * c + W * s)
    de_da = 0.5 * (L * s - W * c)  # |d extent/2 / d a|, up to sign
    known_var = (0.5 * sL * c) ** 2 + (0.5 * sW * s) ** 2 + (de_da * hs) ** 2
    known = np.isfinite(h) & (hs < math.pi / 4)
    return np.where(known, known_off, unknown_off), np.where(known, known_var, unknown_var)
