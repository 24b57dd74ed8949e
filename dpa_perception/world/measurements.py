"""What the tracker takes from one camera frame (:class:`Measurements`) and gives back (:class:`StepResult`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpa_perception.world.objects import WorldObject

NO_OFFSET = -2  # Measurements.contact_class: the contact point is the footprint centre already


@dataclass(frozen=True)
class Measurements:
    """One camera frame's projected detections (N of them)."""

    camera: str
    stamp_ns: int
    contact: np.ndarray  # (N, 2) ground point of each box's bottom centre, metres
    contact_cov: np.ndarray  # (N, 2, 2) its covariance from the pixel noise, m^2
    ray_angle: np.ndarray  # (N,) direction of the viewing ray on the ground, away from the camera (rad)
    box_width_m: np.ndarray  # (N,) box width in metres at the object's range
    scores: np.ndarray  # (N,)
    class_ids: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) image boxes (x1, y1, x2, y2)
    ground_z: float = 0.0
    # (N,) class whose footprint the contact is on (a rider: its vehicle; -1: its own; NO_OFFSET: the
    # contact already is the footprint centre)
    contact_class: np.ndarray | None = None
    extra_var: np.ndarray | None = None  # (N,) added along-ray variance (m^2): a bottom hidden behind another box

    def offset_classes(self) -> np.ndarray:
        """The class ids whose priors place the footprint centre behind the contact point."""
        if self.contact_class is None:
            return self.class_ids
        return np.where(self.contact_class >= 0, self.contact_class, self.class_ids)

    def offset_scale(self) -> np.ndarray | float:
        """0 where the contact point already is the footprint centre, else 1."""
        return 1.0 if self.contact_class is None else (self.contact_class != NO_OFFSET).astype(np.float64)

    def along_var(self, idx: np.ndarray | slice = slice(None)) -> np.ndarray | float:
        return 0.0 if self.extra_var is None else self.extra_var[idx]

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass(frozen=True)
class StepResult:
    """What one frame did: the track of each measurement (0 = none or not confirmed) and the objects."""

    track_ids: np.ndarray  # (N,) int64
    objects: list[WorldObject]  # this frame's detections of confirmed tracks (with box and score)
    fused: list[WorldObject]  # every confirmed track at the frame's stamp
