"""Synthetic roadside-camera scenes with exact labels (numpy + OpenCV, deterministic by seed).

An elevated, fixed camera (5-9 m up, pitched down) looks along a four-lane road with a cross
street (an intersection), sidewalks, buildings and street lights.  Road users move over time:
cars, vans and trucks, buses, motorcycles and bicycles (each with a rider) and pedestrians.
Vehicles are shaded 3-D boxes (body, cabin, windows, wheels) projected with a pinhole camera;
two-wheelers are 3-D wheel circles and frames; people are articulated billboards.

``Scene(seed).frame(t, weather=..., strength=...)`` returns ``(image, labels)``: a BGR ``uint8``
image (default 640 x 360) and a :class:`Labels` record with one exact box per visible object.

Several cameras on one world: ``Scene(seed).view(camera)`` is the same layout and the very same
traffic seen from another pose (:func:`shared_cameras` gives overlapping roadside poses);
:meth:`Scene.world_state` is an object's ground truth in the world frame (x = scene X east, y =
scene Z along the road, z = scene Y up; heading CCW from +x), and :func:`gt_object_id` its id, new
after each wrap of its loop (an object that leaves the far end comes back at the near one).

Labels
------
* Class ids are the COCO ids: person 0, bicycle 1, car 2, motorcycle 3, bus 5, truck 7 (vans
  and lorries are both ``truck``, as in COCO).  A cyclist is two objects, like COCO: the
  ``bicycle`` and the riding ``person``; the same for a motorcyclist.
* Every object is drawn into an instance-id buffer as well as the image, back to front, so the
  box is the bounding box of the object's *visible* pixels (occluded parts excluded), in pixel
  edges: ``x2 = last visible column + 1``.  Boxes are clipped to the image by construction.
* An object is labelled when at least ``MIN_VISIBLE`` (25 %) of its own pixels are visible and
  its visible box is at least 3 x 4 px; fainter remnants (mostly hidden, or cut by the image
  border) get no label.  Weather does not change boxes: a pedestrian in thick fog keeps its box
  (the detector is expected to find it; that is what the evaluation measures).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from dpa_perception.demo import weather as wx

COCO_IDS = {"person": 0, "bicycle": 1, "car": 2, "motorcycle": 3, "bus": 5, "truck": 7}
DEMO_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck")  # detector class order
COCO_TO_DEMO = {COCO_IDS[n]: i for i, n in enumerate(DEMO_CLASSES)}
CONDITIONS = ("clear", "fog", "rain", "night")
MIN_VISIBLE = 0.25
WRAP_ID_STRIDE = 1000  # ground-truth id = object index + WRAP_ID_STRIDE * lap (see gt_object_id)

_CAR_COLOURS = [
    (40, 40, 200), (200, 60, 30), (230, 230, 230), (30, 30, 30), (150, 150, 150), (40, 140, 40),
    (20, 170, 230), (120, 60, 20), (180, 180, 200), (90, 30, 120), (60, 100, 160), (200, 200, 60),
]
_SHIRTS = [(30, 30, 180), (180, 60, 20), (40, 140, 40), (200, 200, 200), (20, 20, 20), (0, 140, 230),
           (130, 40, 130), (80, 80, 80), (20, 200, 200), (160, 120, 60)]
_SKIN = [(140, 170, 220), (90, 120, 170), (60, 80, 120), (120, 150, 200)]


@dataclass
class Camera:
    """Pinhole camera above the road: world X right, Y up, Z along the road."""

    width: int = 640
    height: int = 360
    focal: float = 520.0
    x: float = -2.0
    h: float = 7.0
    pitch_deg: float = 13.0
    yaw_deg: float = 0.0
    z: float = 0.0  # position along the road (scene Z); 0 for the single-camera scenes

    def __post_init__(self) -> None:
        p, y = math.radians(self.pitch_deg), math.radians(self.yaw_deg)
        fwd = np.array([math.sin(y) * math.cos(p), -math.sin(p), math.cos(y) * math.cos(p)])
        right = np.array([math.cos(y), 0.0, -math.sin(y)])
        up = np.cross(fwd, right)
        self.R = np.stack([right, -up, fwd])  # rows: image x, image y (down), depth
        self.C = np.array([self.x, self.h, self.z])

    def to_cam(self, pts: np.ndarray) -> np.ndarray:
        return (np.asarray(pts, np.float64).reshape(-1, 3) - self.C) @ self.R.T

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and depths (N,) of world points."""
        c = self.to_cam(pts)
        z = np.maximum(c[:, 2], 1e-3)
        uv = np.stack([self.width / 2 + self.focal * c[:, 0] / z, self.height / 2 + self.focal * c[:, 1] / z], 1)
        return uv, c[:, 2]

    def depth(self, p: np.ndarray) -> float:
        return float(self.to_cam(p)[0, 2])


def _clip_poly_near(cam_pts: np.ndarray, near: float = 0.5) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-space polygon against the plane z = near."""
    out = []
    n = len(cam_pts)
    for i in range(n):
        a, b = cam_pts[i], cam_pts[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out)


def _wrap_angle(a: float) -> float:
    return math.atan2(math.sin(a), math.cos(a))


def gt_object_id(index: int, lap: int) -> int:
    """Ground-truth id of object ``index`` on its ``lap``-th pass: a new id after each wrap (the jump back)."""
    return int(index) + WRAP_ID_STRIDE * int(lap)


def shared_cameras(seed: int, n: int, width: int = 640, height: int = 360) -> list[Camera]:
    """``n`` roadside cameras on one stretch of road, each with its own pose, all looking along +Z.

    The poses stay within the ranges the demo detector was trained on (5-9 m up, pitched 10-17 deg
    down, yawed within 12 deg) and near the road's start (scene Z within [-3, 0]), so their views
    overlap: an object on the road is seen by several cameras.
    """
    rng = np.random.default_rng([seed, 31])
    s = width / 640.0
    offsets = (-4.5, 2.5, -8.0, 4.0)
    cams = []
    for k in range(n):
        x = offsets[k] + float(rng.uniform(-0.8, 0.8)) if k < len(offsets) else float(rng.uniform(-8.5, 4.0))
        yaw = float(np.clip(-0.9 * x + rng.uniform(-3.0, 3.0), -11.0, 11.0))
        cams.append(Camera(width, height, focal=float(rng.uniform(480, 550)) * s, x=round(x, 3),
                           h=round(float(rng.uniform(5.5, 8.5)), 3), pitch_deg=round(float(rng.uniform(11.0, 16.0)), 3),
                           yaw_deg=round(yaw, 3), z=round(float(rng.uniform(-3.0, 0.0)), 3)))
    return cams


def _shade(colour, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * k))) for c in colour)  # type: ignore[return-value]


@dataclass
class Obj:
    kind: str  # car, van, truck, bus, motorcycle, bicycle, person
    cls: int  # COCO id
    lane_x: float
    z0: float
    speed: float  # m/s along the heading
    heading: float  # radians; 0 = +Z (away from the camera), pi = toward the camera
    size: tuple[float, float, float]  # length, width, height
    colour: tuple[int, int, int]
    colour2: tuple[int, int, int]
    phase: float
    span: tuple[float, float]  # coordinate range the object loops over
    cross: bool = False  # moving along X on the cross street
    parent: int = -1  # rider: index of the vehicle it sits on
    rider_of: str = ""


@dataclass
class Labels:
    """Exact boxes of the visible objects of one frame."""

    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    class_ids: np.ndarray  # (N,) int64 COCO ids
    visible: np.ndarray  # (N,) float32 visible fraction of each object's pixels
    depth: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    object_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) indices in Scene.objects

    def __len__(self) -> int:
        return len(self.class_ids)


class Scene:
    """One camera's scene: layout, camera and traffic drawn from ``seed``; ``frame(t)`` renders it."""

    def __init__(self, seed: int, width: int = 640, height: int = 360, *, density: float = 1.0, two_wheelers: float = 1.0,
                 camera: Camera | None = None, noise: bool = True, objects: list[Obj] | None = None):
        self.seed = int(seed)
        self.fx_seed = self.seed  # weather texture and sensor noise (per camera in a shared world)
        rng = np.random.default_rng(self.seed)
        s = width / 640.0
        self.cam = camera or Camera(
            width, height, focal=float(rng.uniform(470, 560)) * s, x=float(rng.uniform(-9.0, 4.0)),
            h=float(rng.uniform(5.0, 9.0)), pitch_deg=float(rng.uniform(10.0, 17.0)),
            yaw_deg=float(rng.uniform(-12.0, 12.0)),
        )
        self.noise = noise
        self.cross_z = float(rng.uniform(24.0, 40.0))  # centre of the cross street
        self.z_far = 70.0
        self.asphalt = int(rng.integers(70, 115))
        self.grass = tuple(int(v) for v in rng.integers(40, 110, 3) * np.array([0.6, 1.0, 0.7]))
        self.sky = tuple(int(v) for v in (rng.uniform(200, 250), rng.uniform(170, 215), rng.uniform(120, 170)))
        self._rng_bg = np.random.default_rng(self.seed + 7)
        self.lamps = [(side * float(rng.uniform(8.5, 9.5)), z) for side in (-1, 1)
                      for z in np.arange(float(rng.uniform(4, 14)), self.z_far, float(rng.uniform(14, 22)))]
        self.objects = objects if objects is not None else self._traffic(rng, density, two_wheelers)
        self.background = self._background()

    # ------------------------------------------------------------------ layout

    def _traffic(self, rng: np.random.Generator, density: float, two_wheelers: float) -> list[Obj]:
        objs: list[Obj] = []
        span = (4.0, self.z_far)

        def vehicle(kind: str, lane_x: float, heading: float, z0: float, cross: bool = False) -> None:
            if kind == "car":
                size = (rng.uniform(3.9, 4.9), rng.uniform(1.65, 1.9), rng.uniform(1.35, 1.6))
                cls = 2
            elif kind == "van":
                size = (rng.uniform(4.8, 6.0), rng.uniform(1.9, 2.1), rng.uniform(2.1, 2.6))
                cls = 7
            elif kind == "truck":
                size = (rng.uniform(7.0, 10.0), rng.uniform(2.3, 2.55), rng.uniform(3.0, 3.8))
                cls = 7
            else:  # bus
                size = (rng.uniform(10.5, 12.5), rng.uniform(2.45, 2.6), rng.uniform(3.0, 3.3))
                cls = 5
            colour = _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))]
            colour2 = _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))]
            sp = (-40.0, 40.0) if cross else span
            dims = (float(size[0]), float(size[1]), float(size[2]))
            objs.append(Obj(kind, cls, lane_x, z0, float(rng.uniform(4.0, 13.0)), heading, dims, colour, colour2,
                            float(rng.uniform(0, 6.28)), sp, cross))

        kinds = ["car"] * 10 + ["van"] * 2 + ["truck"] * 2 + ["bus"] * 2
        lanes = [(-5.25, math.pi), (-1.75, math.pi), (1.75, 0.0), (5.25, 0.0)]
        n_lane = max(1, round(rng.integers(2, 5) * density))
        for lane_x, heading in lanes:
            zs = np.sort(rng.uniform(span[0], span[1], n_lane))
            gap = 0.0
            for z in zs:
                if z < gap:
                    continue
                kind = kinds[int(rng.integers(len(kinds)))]
                vehicle(kind, lane_x, heading, float(z))
                gap = z + 14.0
        for _ in range(int(rng.integers(0, 3))):  # cross traffic
            direction = int(rng.integers(2))
            vehicle(kinds[int(rng.integers(len(kinds)))], self.cross_z + (-1.75 if direction else 1.75),
                    math.pi / 2 if direction else -math.pi / 2, float(rng.uniform(-40, 40)), cross=True)

        def two_wheeler(kind: str, x: float, heading: float, z0: float, cross: bool = False) -> None:
            if kind == "bicycle":
                size, cls, speed = (1.75, 0.55, 1.05), 1, float(rng.uniform(3.0, 6.0))
            else:
                size, cls, speed = (2.1, 0.75, 1.15), 3, float(rng.uniform(5.0, 12.0))
            colour = _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))]
            sp = (-40.0, 40.0) if cross else span
            objs.append(Obj(kind, cls, x, z0, speed, heading, size, colour, colour, float(rng.uniform(0, 6.28)), sp, cross))
            parent = len(objs) - 1
            self_person(x, heading, z0, speed, sp, cross, parent, kind)

        def self_person(x: float, heading: float, z0: float, speed: float, sp: tuple[float, float],
                        cross: bool, parent: int, rider_of: str) -> None:
            hgt = float(rng.uniform(1.55, 1.9))
            objs.append(Obj("person", 0, x, z0, speed, heading, (0.35, 0.5, hgt),
                            _SHIRTS[int(rng.integers(len(_SHIRTS)))], _SHIRTS[int(rng.integers(len(_SHIRTS)))],
                            float(rng.uniform(0, 6.28)), sp, cross, parent, rider_of))
            objs[-1].colour2 = _SKIN[int(rng.integers(len(_SKIN)))] if not rider_of else objs[-1].colour2

        for _ in range(round(rng.integers(1, 4) * density * two_wheelers)):
            side = float(rng.choice([-1, 1]))
            two_wheeler("bicycle", side * float(rng.uniform(7.3, 7.9)), 0.0 if rng.random() < 0.5 else math.pi,
                        float(rng.uniform(*span)))
        for _ in range(round(rng.integers(0, 3) * density * two_wheelers)):
            lane_x, heading = lanes[int(rng.integers(4))]
            two_wheeler("motorcycle", lane_x + float(rng.uniform(-0.8, 0.8)), heading, float(rng.uniform(*span)))
        if rng.random() < 0.5:
            two_wheeler("bicycle" if rng.random() < 0.5 else "motorcycle", self.cross_z + 1.0,
                        float(rng.choice([-1, 1])) * math.pi / 2, float(rng.uniform(-40, 40)), cross=True)
        for _ in range(round(rng.integers(3, 9) * density)):  # pedestrians on the sidewalks
            side = float(rng.choice([-1, 1]))
            hgt = float(rng.uniform(1.5, 1.95))
            objs.append(Obj("person", 0, side * float(rng.uniform(8.2, 9.8)), float(rng.uniform(*span)),
                            float(rng.uniform(0.0, 1.8)), 0.0 if rng.random() < 0.5 else math.pi, (0.35, 0.5, hgt),
                            _SHIRTS[int(rng.integers(len(_SHIRTS)))], _SKIN[int(rng.integers(len(_SKIN)))],
                            float(rng.uniform(0, 6.28)), span))
        for _ in range(int(rng.integers(0, 4))):  # pedestrians on the crosswalk
            hgt = float(rng.uniform(1.5, 1.95))
            objs.append(Obj("person", 0, self.cross_z - 6.5 + float(rng.uniform(-1, 1)), float(rng.uniform(-11, 11)),
                            float(rng.uniform(0.6, 1.6)), float(rng.choice([-1, 1])) * math.pi / 2, (0.35, 0.5, hgt),
                            _SHIRTS[int(rng.integers(len(_SHIRTS)))], _SKIN[int(rng.integers(len(_SKIN)))],
                            float(rng.uniform(0, 6.28)), (-11.0, 11.0), True))
        return objs

    def _ground_poly(self, img: np.ndarray, corners: list[tuple[float, float]], colour, y: float = 0.0) -> None:
        cam = self.cam.to_cam(np.array([(x, y, z) for x, z in corners]))
        cam = _clip_poly_near(cam)
        if len(cam) < 3:
            return
        z = cam[:, 2]
        uv = np.stack([self.cam.width / 2 + self.cam.focal * cam[:, 0] / z,
                       self.cam.height / 2 + self.cam.focal * cam[:, 1] / z], 1)
        cv2.fillPoly(img, [np.round(uv * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)

    def _background(self) -> np.ndarray:
        w, h = self.cam.width, self.cam.height
        img = np.empty((h, w, 3), np.uint8)
        grad = np.linspace(0.75, 1.05, h)[:, None, None]
        img[:] = np.clip(np.array(self.sky)[None, None] * grad, 0, 255).astype(np.uint8)
        far = 400.0
        self._ground_poly(img, [(-far, 0.1), (far, 0.1), (far, far), (-far, far)], self.grass)
        rng = self._rng_bg
        # buildings behind the sidewalks
        for side in (-1, 1):
            z = float(rng.uniform(-5, 10))
            while z < 160:
                length = float(rng.uniform(8, 25))
                if abs(z + length / 2 - self.cross_z) < length / 2 + 7:
                    z += length + 4
                    continue
                x0 = side * float(rng.uniform(13, 18))
                depth_b, height_b = float(rng.uniform(8, 15)), float(rng.uniform(6, 25))
                col = tuple(int(v) for v in rng.integers(70, 200, 3))
                self._box(img, None, 0, np.array([x0 + side * depth_b / 2, 0.0, z + length / 2]), 0.0,
                          (length, depth_b, height_b), col, windows=True)
                z += length + float(rng.uniform(0.5, 6))
        a = self.asphalt
        road = (a, a, a + 4)
        self._ground_poly(img, [(-7.0, 0.5), (7.0, 0.5), (7.0, 400), (-7.0, 400)], road, 0.001)
        self._ground_poly(img, [(-400, self.cross_z - 5), (400, self.cross_z - 5), (400, self.cross_z + 5),
                                (-400, self.cross_z + 5)], road, 0.002)
        walk = (a + 60, a + 60, a + 55)
        for side in (-1, 1):
            for z0, z1 in ((0.5, self.cross_z - 5), (self.cross_z + 5, 400)):
                self._ground_poly(img, [(side * 7.0, z0), (side * 11.0, z0), (side * 11.0, z1), (side * 7.0, z1)],
                                  walk, 0.003)
        white, yellow = (225, 225, 225), (40, 190, 220)
        for z in np.arange(1.0, 200.0, 9.0):  # lane dashes
            if abs(z + 1.5 - self.cross_z) < 7:
                continue
            for x in (-3.5, 3.5):
                self._ground_poly(img, [(x - 0.08, z), (x + 0.08, z), (x + 0.08, z + 3.0), (x - 0.08, z + 3.0)], white, 0.004)
        for z0, z1 in ((0.5, self.cross_z - 8), (self.cross_z + 5.5, 400)):
            for x in (-0.12, 0.12):
                self._ground_poly(img, [(x - 0.06, z0), (x + 0.06, z0), (x + 0.06, z1), (x - 0.06, z1)], yellow, 0.004)
        for x in np.arange(-6.5, 7.0, 1.0):  # zebra crossing
            self._ground_poly(img, [(x, self.cross_z - 8), (x + 0.5, self.cross_z - 8), (x + 0.5, self.cross_z - 5.2),
                                    (x, self.cross_z - 5.2)], white, 0.004)
        for lx, lz in self.lamps:  # street-light poles (not labelled)
            base, _ = self.cam.project(np.array([[lx, 0, lz], [lx, 7.5, lz], [lx - np.sign(lx) * 1.8, 7.5, lz]]))
            if self.cam.depth(np.array([lx, 0, lz])) > 1.0:
                t = max(1, round(0.12 * self.cam.focal / max(self.cam.depth(np.array([lx, 0, lz])), 1.0)))
                p = np.round(base).astype(int)
                cv2.line(img, tuple(p[0]), tuple(p[1]), (60, 60, 60), t, cv2.LINE_AA)
                cv2.line(img, tuple(p[1]), tuple(p[2]), (60, 60, 60), t, cv2.LINE_AA)
        # texture: low-frequency shading and fine grain, fixed per scene
        low = cv2.resize(rng.normal(0, 8, (9, 16)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        grain = rng.normal(0, 3, (h, w)).astype(np.float32)
        return np.clip(img.astype(np.float32) + (low + grain)[..., None], 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------ drawing primitives

    def _grow(self, uv: np.ndarray, margin: float = 1.0) -> None:
        bb = self._bb
        bb[0] = min(bb[0], float(uv[:, 0].min()) - margin)
        bb[1] = min(bb[1], float(uv[:, 1].min()) - margin)
        bb[2] = max(bb[2], float(uv[:, 0].max()) + margin)
        bb[3] = max(bb[3], float(uv[:, 1].max()) + margin)

    def _poly(self, img, ids, oid, uv: np.ndarray, colour) -> None:
        if ids is not None:
            self._grow(uv)
        pts = np.round(uv * 16).astype(np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_8, shift=4)
        if ids is not None:
            cv2.fillPoly(ids, [pts], oid, cv2.LINE_8, shift=4)

    def _box(self, img, ids, oid, centre: np.ndarray, heading: float, size, colour, *, y0: float = 0.0,
             windows: bool = False, light: float = 1.0) -> None:
        """A shaded cuboid (length along the heading) standing at ``y0`` on its bottom face."""
        L, W, H = size
        c, s = math.cos(heading), math.sin(heading)
        fwd = np.array([s, 0.0, c]) * L / 2
        side = np.array([c, 0.0, -s]) * W / 2
        base = centre + np.array([0.0, y0, 0.0])
        up = np.array([0.0, H, 0.0])
        corners = np.array([base + a * fwd + b * side + k * up for k in (0, 1) for a, b in
                            ((1, 1), (1, -1), (-1, -1), (-1, 1))])
        cam = self.cam.to_cam(corners)
        if cam[:, 2].min() < 0.5:
            return
        uv, _ = self.cam.project(corners)
        faces = [((0, 1, 5, 4), fwd), ((2, 3, 7, 6), -fwd), ((3, 0, 4, 7), side), ((1, 2, 6, 5), -side),
                 ((4, 5, 6, 7), up)]
        shade = {0: 0.9, 1: 0.75, 2: 1.0, 3: 0.65, 4: 1.15}
        for fi, (idx, normal) in enumerate(faces):
            centre_f = corners[list(idx)].mean(0)
            if np.dot(normal, self.cam.C - centre_f) <= 0:
                continue
            col = _shade(colour, shade[fi] * light)
            self._poly(img, ids, oid, uv[list(idx)], col)
            if windows and fi < 4 and H > 4:
                self._windows(img, corners[list(idx)], colour)

    def _windows(self, img, quad: np.ndarray, colour) -> None:
        a, b, _, d = quad  # bottom-left, bottom-right, top-right, top-left
        nx = max(1, int(np.linalg.norm(b - a) / 3.0))
        ny = max(1, int(np.linalg.norm(d - a) / 3.2))
        wcol = _shade(colour, 0.45)
        for i in range(nx):
            for j in range(ny):
                u0, u1 = (i + 0.25) / nx, (i + 0.75) / nx
                v0, v1 = (j + 0.3) / ny, (j + 0.75) / ny
                p = [a + (b - a) * u + (d - a) * v for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))]
                uv, z = self.cam.project(np.array(p))
                if z.min() > 0.5:
                    self._poly(img, None, 0, uv, wcol)

    def _wheel(self, img, ids, oid, centre: np.ndarray, heading: float, radius: float, colour, width: int) -> None:
        ang = np.linspace(0, 2 * np.pi, 14, endpoint=False)
        d = np.array([math.sin(heading), 0.0, math.cos(heading)])
        pts = centre[None] + radius * (np.cos(ang)[:, None] * d[None] + np.sin(ang)[:, None] * np.array([0, 1.0, 0])[None])
        uv, z = self.cam.project(pts)
        if z.min() < 0.5:
            return
        if ids is not None:
            self._grow(uv, width + 1.0)
        p = np.round(uv * 16).astype(np.int32)
        cv2.polylines(img, [p], True, colour, width, cv2.LINE_8, shift=4)
        if ids is not None:
            cv2.polylines(ids, [p], True, oid, width, cv2.LINE_8, shift=4)

    def _line3(self, img, ids, oid, a: np.ndarray, b: np.ndarray, colour, width: int) -> None:
        uv, z = self.cam.project(np.array([a, b]))
        if z.min() < 0.5:
            return
        if ids is not None:
            self._grow(uv, width + 1.0)
        p = np.round(uv * 16).astype(np.int32)
        cv2.line(img, tuple(p[0]), tuple(p[1]), colour, width, cv2.LINE_8, shift=4)
        if ids is not None:
            cv2.line(ids, tuple(p[0]), tuple(p[1]), oid, width, cv2.LINE_8, shift=4)

    # ------------------------------------------------------------------ objects

    def position(self, o: Obj, t: float) -> np.ndarray:
        lo, hi = o.span
        along = (o.z0 - lo + o.speed * t) % (hi - lo)
        if o.cross:
            x = lo + along if math.sin(o.heading) > 0 else hi - along
            return np.array([x, 0.0, o.lane_x])
        z = lo + along if math.cos(o.heading) > 0 else hi - along
        return np.array([o.lane_x, 0.0, z])

    def lap(self, o: Obj, t: float) -> int:
        """How often ``o`` has wrapped round its span by time ``t`` (it teleports back at each wrap)."""
        if o.parent >= 0:
            o = self.objects[o.parent]
        lo, hi = o.span
        return math.floor((o.z0 - lo + o.speed * t) / (hi - lo))

    def world_state(self, index: int, t: float) -> tuple[float, float, float, float]:
        """World-frame ground truth of object ``index`` at ``t``: footprint centre x, y (m), heading and speed.

        World frame: x = scene X, y = scene Z (along the road), z = scene Y (up), so the ground is z = 0;
        the heading is counter-clockwise from +x (REP 103), the direction of motion.  A rider stands on
        its vehicle's footprint and moves with it.
        """
        o = self.objects[index]
        mover = self.objects[o.parent] if o.parent >= 0 else o
        p = self.position(mover, t)
        return float(p[0]), float(p[2]), _wrap_angle(math.pi / 2 - mover.heading), float(mover.speed)

    def view(self, camera: Camera, fx_seed: int | None = None) -> Scene:
        """The same world (layout, buildings, lamps, the very same traffic) seen by another camera.

        The background is rendered for ``camera``; ``objects`` is shared (not copied), so object indices
        and :meth:`world_state` agree between the views.  ``fx_seed`` seeds this camera's weather
        texture and sensor noise (default: the scene's).
        """
        other = copy.copy(self)
        other.cam = camera
        other.fx_seed = self.seed if fx_seed is None else int(fx_seed)
        other._rng_bg = np.random.default_rng(self.seed + 7)
        other.background = other._background()
        return other

    def _draw_vehicle(self, img, ids, oid, o: Obj, p: np.ndarray) -> None:
        L, W, H = o.size
        hd = o.heading
        fwd = np.array([math.sin(hd), 0.0, math.cos(hd)])
        side = np.array([math.cos(hd), 0.0, -math.sin(hd)])
        wheel_r = 0.33 if o.kind in ("car", "van") else 0.5
        if o.kind == "car":
            self._box(img, ids, oid, p, hd, (L, W, H * 0.5), o.colour, y0=wheel_r * 0.6)
            cab_c = p - fwd * L * 0.05
            self._box(img, ids, oid, cab_c, hd, (L * 0.52, W * 0.9, H * 0.42), _shade(o.colour, 0.5), y0=wheel_r * 0.6 + H * 0.5)
        elif o.kind == "van":
            self._box(img, ids, oid, p, hd, (L, W, H - wheel_r * 0.6), o.colour, y0=wheel_r * 0.6)
        elif o.kind == "truck":
            cab_l = 2.2
            self._box(img, ids, oid, p + fwd * (L - cab_l) / 2, hd, (cab_l, W, H * 0.75), o.colour2, y0=wheel_r * 0.8)
            self._box(img, ids, oid, p - fwd * cab_l / 2, hd, (L - cab_l - 0.2, W, H - wheel_r * 0.8), o.colour, y0=wheel_r * 0.8)
        else:  # bus: body plus a dark window band
            self._box(img, ids, oid, p, hd, (L, W, H * 0.55), o.colour, y0=wheel_r * 0.6)
            self._box(img, ids, oid, p, hd, (L, W, H * 0.3), (50, 45, 40), y0=wheel_r * 0.6 + H * 0.55)
            self._box(img, ids, oid, p, hd, (L, W, H * 0.15 - wheel_r * 0.6), o.colour, y0=wheel_r * 0.6 + H * 0.85)
        depth = max(self.cam.depth(p), 1.0)
        ww = max(1, round(0.25 * self.cam.focal / depth))
        for a in (0.33, -0.33):
            for b in (0.5, -0.5):
                c = p + fwd * L * a + side * W * b + np.array([0.0, wheel_r, 0.0])
                if np.dot(side * b, self.cam.C - c) > 0:
                    self._wheel(img, ids, oid, c, hd, wheel_r * 0.9, (25, 25, 25), ww)

    def _draw_two_wheeler(self, img, ids, oid, o: Obj, p: np.ndarray) -> None:
        L, _, H = o.size
        fwd = np.array([math.sin(o.heading), 0.0, math.cos(o.heading)])
        r = 0.34 if o.kind == "bicycle" else 0.32
        front = p + fwd * (L / 2 - r) + np.array([0, r, 0])
        back = p - fwd * (L / 2 - r) + np.array([0, r, 0])
        depth = max(self.cam.depth(p), 1.0)
        ww = max(1, round((0.06 if o.kind == "bicycle" else 0.12) * self.cam.focal / depth))
        for c in (back, front):
            self._wheel(img, ids, oid, c, o.heading, r, (20, 20, 20), ww)
        seat = p - fwd * 0.2 + np.array([0, H * 0.85, 0])
        bar = p + fwd * (L / 2 - r - 0.1) + np.array([0, H, 0])
        if o.kind == "bicycle":
            fw = max(1, round(0.05 * self.cam.focal / depth))
            for a, b in ((back, seat), (seat, bar), (bar, front), (back, p + np.array([0, r, 0])),
                         (p + np.array([0, r, 0]), seat), (p + np.array([0, r, 0]), bar)):
                self._line3(img, ids, oid, a, b, o.colour, fw)
        else:
            self._box(img, ids, oid, p, o.heading, (L * 0.6, 0.45, 0.45), o.colour, y0=r * 1.1)
            self._line3(img, ids, oid, front, bar, (40, 40, 40), ww)

    def _draw_person(self, img, ids, oid, o: Obj, p: np.ndarray, t: float, seated: bool) -> None:
        H = o.size[2]
        uv, z = self.cam.project(np.array([p, p + np.array([0, H, 0])]))
        if z.min() < 0.8:
            return
        foot, head = uv
        hpx = foot[1] - head[1]
        if hpx < 2:
            return
        up = (head - foot) / max(np.linalg.norm(head - foot), 1e-6)
        right = np.array([-up[1], up[0]])
        wpx = 0.26 * hpx
        swing = 0.0 if seated else math.sin(o.phase + 2 * t * max(o.speed, 0.8) / 0.8) * 0.6
        walking_sideways = abs(math.sin(o.heading)) > 0.5

        def at(a: float, b: float) -> np.ndarray:  # a: height fraction, b: width fraction
            return foot + up * hpx * a + right * wpx * b

        leg_col = _shade(o.colour, 0.5) if o.parent < 0 else (50, 40, 40)
        hip = 0.5
        for sgn in (-1, 1):
            dx = sgn * 0.25 + (swing * sgn * (1.0 if walking_sideways else 0.3))
            if seated:
                knee = at(0.32, sgn * 0.3 + 0.6)
                foot_p = at(0.05 if o.rider_of == "bicycle" else 0.15, sgn * 0.3 + 0.3)
                self._poly(img, ids, oid, np.array([at(hip, sgn * 0.35 - 0.1), at(hip, sgn * 0.05), knee + right * wpx * 0.15,
                                                    foot_p + right * wpx * 0.1, foot_p - right * wpx * 0.15,
                                                    knee - right * wpx * 0.15]), leg_col)
            else:
                self._poly(img, ids, oid, np.array([at(hip, sgn * 0.05), at(hip, sgn * 0.45), at(0.0, dx + sgn * 0.12),
                                                    at(0.0, dx - sgn * 0.12)]), leg_col)
        self._poly(img, ids, oid, np.array([at(0.47, -0.5), at(0.47, 0.5), at(0.82, 0.55), at(0.82, -0.55)]), o.colour)
        arm = 0.0 if seated else -swing * 0.4
        for sgn in (-1, 1):
            self._poly(img, ids, oid, np.array([at(0.8, sgn * 0.5), at(0.8, sgn * 0.72), at(0.5, sgn * 0.62 + arm * sgn),
                                                at(0.5, sgn * 0.45 + arm * sgn)]), _shade(o.colour, 0.85))
        hc = at(0.905, 0.0)
        r = max(1.0, 0.085 * hpx)
        skin = o.colour2 if o.parent < 0 else (120, 150, 190)
        cv2.circle(img, tuple(np.round(hc * 16).astype(int)), round(r * 16), skin, -1, cv2.LINE_8, shift=4)
        if ids is not None:
            self._grow(hc[None], r + 2.0)
            cv2.circle(ids, tuple(np.round(hc * 16).astype(int)), round(r * 16), oid, -1, cv2.LINE_8, shift=4)
        hair = np.array([hc + right * r * 1.05 + up * r * 0.1, hc - right * r * 1.05 + up * r * 0.1, hc + up * r * 1.1])
        self._poly(img, ids, oid, hair, (30, 30, 40) if o.parent < 0 else (30, 120, 230))

    # ------------------------------------------------------------------ frame

    def render(self, t: float) -> tuple[np.ndarray, Labels, list[tuple[Obj, np.ndarray]]]:
        """Clean daylight render (no weather, no noise) with labels and the object positions."""
        img = self.background.copy()
        ids = np.zeros(img.shape[:2], np.uint8)
        placed = []
        for k, o in enumerate(self.objects):
            p = self.position(o, t)
            if o.parent >= 0:
                p = self.position(self.objects[o.parent], t)
                p = p + np.array([0.0, 0.45 if o.rider_of == "bicycle" else 0.55, 0.0])
            d = self.cam.depth(p)
            if d < 2.0:
                continue
            placed.append((d - (0.01 if o.parent >= 0 else 0.0), k, o, p))
        placed.sort(key=lambda r: -r[0])
        full_area: dict[int, tuple[int, tuple[int, int, int, int]]] = {}
        h, w = ids.shape
        for n, (_d, _k, o, p) in enumerate(placed[:254]):
            oid = n + 1
            self._bb = [np.inf, np.inf, -np.inf, -np.inf]
            if o.kind == "person":
                self._draw_person(img, ids, oid, o, p, t, seated=o.parent >= 0)
            elif o.kind in ("bicycle", "motorcycle"):
                self._draw_two_wheeler(img, ids, oid, o, p)
            else:
                self._draw_vehicle(img, ids, oid, o, p)
            # full (unoccluded, in-image) area of this object: every pixel it drew is its own right now
            bb = self._bb
            if not np.isfinite(bb[0]):
                continue
            x0, y0 = max(0, math.floor(bb[0])), max(0, math.floor(bb[1]))
            x1, y1 = min(w, math.ceil(bb[2]) + 1), min(h, math.ceil(bb[3]) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            area = int(np.count_nonzero(ids[y0:y1, x0:x1] == oid))
            if area:
                full_area[oid] = (area, (x0, y0, x1, y1))
        boxes, cls, vis, dep, idx = [], [], [], [], []
        for n, (d, k, o, _p) in enumerate(placed[:254]):
            oid = n + 1
            if oid not in full_area:
                continue
            area, (x0, y0, x1, y1) = full_area[oid]
            sub = ids[y0:y1, x0:x1] == oid
            cnt = int(sub.sum())
            if cnt == 0 or cnt / area < MIN_VISIBLE:
                continue
            cols = np.nonzero(sub.any(0))[0]
            rows = np.nonzero(sub.any(1))[0]
            bx = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
            if bx[2] - bx[0] < 3 or bx[3] - bx[1] < 4:
                continue
            boxes.append(bx)
            cls.append(o.cls)
            vis.append(cnt / area)
            dep.append(d)
            idx.append(k)
        labels = Labels(np.array(boxes, np.float32).reshape(-1, 4), np.array(cls, np.int64),
                        np.array(vis, np.float32), np.array(dep, np.float32), np.array(idx, np.int64))
        return img, labels, [(o, p) for _, _, o, p in placed]

    def _lights(self, img: np.ndarray, placed: list[tuple[Obj, np.ndarray]], strength: float) -> np.ndarray:
        """Emissive lights for night frames: street-lamp pools, headlights and tail lights."""
        h, w = img.shape[:2]
        glow = np.zeros((h, w, 3), np.float32)
        for lx, lz in self.lamps:
            lamp = np.array([lx - np.sign(lx) * 1.8, 7.4, lz])
            (pl, pg), z = self.cam.project(np.array([lamp, [lamp[0], 0.0, lz]]))
            if z.min() < 1.0:
                continue
            rad = 3.0 * self.cam.focal / z[1]
            cv2.ellipse(glow, (int(pg[0]), int(pg[1])), (int(rad), int(rad * 0.35)), 0, 0, 360, (45, 70, 85), -1)
            cv2.circle(glow, (int(pl[0]), int(pl[1])), max(1, int(0.3 * self.cam.focal / z[0])), (200, 235, 255), -1)
        for o, p in placed:
            if o.kind in ("person", "bicycle"):
                continue
            fwd = np.array([math.sin(o.heading), 0.0, math.cos(o.heading)])
            side = np.array([math.cos(o.heading), 0.0, -math.sin(o.heading)])
            L, W, _ = o.size
            y = 0.75 if o.kind != "bus" else 1.0
            for end, col, beam in ((1, (200, 240, 255), True), (-1, (20, 20, 200), False)):
                face = p + fwd * end * L / 2 + np.array([0, y, 0])
                if np.dot(fwd * end, self.cam.C - face) <= 0:
                    if beam and o.kind != "motorcycle":  # beam on the road ahead, seen from behind too
                        pass
                    else:
                        continue
                offs = (0.0,) if o.kind == "motorcycle" else (W * 0.38, -W * 0.38)
                for off in offs:
                    (q,), (zz,) = self.cam.project((face + side * off)[None])
                    if zz < 1.0:
                        continue
                    r = max(1, round((0.18 if beam else 0.12) * self.cam.focal / zz))
                    cv2.circle(glow, (int(q[0]), int(q[1])), r, col, -1)
                    if beam:
                        cv2.circle(glow, (int(q[0]), int(q[1])), r * 3, (70, 90, 100), -1)
                if beam:
                    spot = p + fwd * (L / 2 + 6.0)
                    (q,), (zz,) = self.cam.project(spot[None])
                    if zz > 1.0:
                        rad = 3.5 * self.cam.focal / zz
                        cv2.ellipse(glow, (int(q[0]), int(q[1])), (int(rad), int(rad * 0.3)), 0, 0, 360, (50, 70, 80), -1)
        soft = cv2.GaussianBlur(glow, (0, 0), 3.0)
        lit = img.astype(np.float32) * (1.0 + soft * (strength * 2.5 / 255.0)) + soft * strength
        return np.clip(lit, 0, 255).astype(np.uint8)

    def frame(self, t: float, weather: str = "clear", strength: float = 0.8,
              frame_index: int | None = None) -> tuple[np.ndarray, Labels]:
        """Render time ``t`` (seconds) under ``weather`` (clear, fog, rain, night, glare)."""
        img, labels, placed = self.render(t)
        fi = round(t * 100) if frame_index is None else int(frame_index)
        if weather == "fog":
            img = wx.add_fog(img, strength, seed=self.fx_seed)
        elif weather == "rain":
            img = wx.add_rain(img, strength, seed=self.fx_seed * 7919 + fi)
        elif weather == "night":
            dark = wx.add_night(img, strength, seed=self.fx_seed * 7919 + fi)
            img = self._lights(dark, placed, strength)
        elif weather == "glare":
            img = wx.add_glare(img, strength, seed=self.fx_seed)
        elif weather != "clear":
            raise ValueError(f"unknown weather {weather!r}")
        if self.noise and weather not in ("night",):
            rng = np.random.default_rng([self.fx_seed, fi])
            n = rng.integers(-3, 4, img.shape, dtype=np.int16)
            img = np.clip(img.astype(np.int16) + n, 0, 255).astype(np.uint8)
        return img, labels


def sample(seed: int, weather: str | None = None, width: int = 640, height: int = 360, *, two_wheelers: float = 1.0
           ) -> tuple[np.ndarray, Labels, str, float]:
    """One random frame: scene, time, weather and strength all drawn from ``seed``.

    ``weather`` None draws clear 40 %, fog 20 %, rain 20 %, night 20 %.  ``two_wheelers``
    multiplies the number of bicycles and motorcycles on the road (the trainer oversamples these
    rare classes; 1.0 is the scene's own mix, which evaluation keeps).
    """
    rng = np.random.default_rng([seed, 99])
    if weather is None:
        weather = str(rng.choice(["clear", "clear", "fog", "rain", "night"]))
    strength = {"clear": 0.0, "fog": float(rng.uniform(0.4, 0.9)), "rain": float(rng.uniform(0.4, 0.9)),
                "night": float(rng.uniform(0.6, 1.0)), "glare": float(rng.uniform(0.3, 0.7))}[weather]
    scene = Scene(seed, width, height, density=float(rng.uniform(0.6, 1.4)), two_wheelers=two_wheelers)
    img, labels = scene.frame(float(rng.uniform(0, 60)), weather, strength)
    return img, labels, weather, strength


def draw_labels(img: np.ndarray, labels: Labels) -> np.ndarray:
    """Boxes and class names drawn on a copy (for docs and debugging)."""
    out = img.copy()
    names = {v: k for k, v in COCO_IDS.items()}
    for b, c in zip(labels.boxes.astype(int), labels.class_ids):
        cv2.rectangle(out, (b[0], b[1]), (b[2] - 1, b[3] - 1), (0, 255, 0), 1)
        cv2.putText(out, names.get(int(c), str(c)), (b[0], max(8, b[1] - 2)), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 255, 0))
    return out
