"""Multi-object tracking on the ground plane: one tracker for all cameras, vectorised over tracks.

Each track is a constant-velocity Kalman filter (state ``x, y, vx, vy``, metres and m/s). Process
noise is continuous white-noise acceleration with spectral density ``track_accel_sigma^2 * 1 s``
(so that predictions compose: predicting in several short steps, one per camera frame, equals
one long step). All tracks live in stacked arrays; prediction, gating and updates are numpy.

Association (per frame of one camera, ByteTrack-style):

1. detections with ``score >= high_score`` against every track;
2. detections in ``[low_score, high_score)`` against the *confirmed* tracks left unmatched;

each by ``scipy.optimize.linear_sum_assignment`` on the squared Mahalanobis distance, forbidden
(cost :data:`FORBIDDEN`) beyond the chi-square gate :data:`CHI2_GATE`, beyond ``gate_m`` metres,
or across class groups (vehicles, persons, two-wheelers, each other class alone; see
:mod:`.priors`): a cyclist's person and bicycle stay two tracks. Unmatched high detections start
tentative tracks, confirmed after ``confirm_hits`` hits. A track no camera updated for
``max_age_s`` is deleted; a tentative one after :data:`TENTATIVE_AGE_FRACTION` of that.

Frames of several cameras (and worker threads) may come slightly out of stamp order: a track is
never predicted backwards (``dt = max(0, stamp - track stamp)``). :meth:`Tracker.step` holds a lock.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dpa_perception.core.types import NS_PER_S, class_name
from dpa_perception.world.measurements import Measurements, StepResult
from dpa_perception.world.objects import WorldObject
from dpa_perception.world.priors import PriorTable, adjust_dims, contact_offset

CHI2_GATE = 13.8  # chi-square, 2 degrees of freedom, 99.9 % (detector box bottoms scatter with heavy tails)
FORBIDDEN = 1e6  # cost of a pair outside the gates
BIRTH_MAX_EXTRA_VAR = 4.0  # m^2: a measurement less sure along its ray than this starts no track
MIN_POS_STD_M = 0.3  # floor of a measurement position std: calibration error, camera-to-camera differences
TENTATIVE_AGE_FRACTION = 1.0 / 3.0  # a tentative track dies after this fraction of max_age_s without update
HEADING_MIN_SPEED = 0.5  # m/s: below it (or below 2 sigma of the speed) the heading is kept, not recomputed
HEADING_UNKNOWN_STD = math.pi / math.sqrt(3.0)  # std of a uniform heading
EXISTENCE_GAIN = 0.5  # a hit of score s removes this * s of the remaining doubt on existence
DIMS_ALPHA = 0.2  # exponential smoothing of a track's dimensions
MERGE_FRACTION = 0.4  # two tracks of one group closer than this fraction of the shorter length are one object
MERGE_MIN_M = 1.2  # ... or closer than this (people, two-wheelers)
MERGE_SPEED_MPS = 2.5  # ... and moving alike (velocity difference below this)
MERGE_CHI2 = 4.0  # ... or within this squared Mahalanobis distance of each other (far objects: wide along the ray)
MERGE_MAX_M = 4.0  # ... and closer than this
FUSED_MAX_GAP_S = 0.3  # the fused output holds confirmed tracks some camera updated this recently


@dataclass(frozen=True)
class TrackerConfig:
    """The tracker's live settings (see :data:`dpa_perception.core.world_params.WORLD_PARAMS`)."""

    high_score: float = 0.5
    low_score: float = 0.1
    gate_m: float = 4.0
    confirm_hits: int = 3
    max_age_s: float = 1.0
    accel_sigma: float = 2.0


_ARRAYS = ("ids", "X", "P", "stamp", "born", "last", "hits", "confirmed", "group", "cls", "exist",
           "heading", "heading_std", "dims", "dims_std", "z", "cam")


class Tracker:
    """Ground-plane multi-object tracker shared by all cameras (thread-safe)."""

    def __init__(self, class_names: Sequence[str], config: TrackerConfig | None = None):
        self.class_names = list(class_names)
        self.priors = PriorTable.build(self.class_names)
        self.config = config or TrackerConfig()
        self._lock = threading.Lock()
        self._next_id = 1
        self._cameras: list[str] = []
        n_cls = max(1, len(self.class_names))
        self.ids = np.zeros(0, np.int64)
        self.X = np.zeros((0, 4))
        self.P = np.zeros((0, 4, 4))
        self.stamp = np.zeros(0, np.int64)  # time of the state
        self.born = np.zeros(0, np.int64)
        self.last = np.zeros(0, np.int64)  # stamp of the last update
        self.hits = np.zeros(0, np.int64)
        self.confirmed = np.zeros(0, bool)
        self.group = np.zeros(0, np.int64)
        self.cls = np.zeros((0, n_cls))  # accumulated matched scores per class id
        self.exist = np.zeros(0)
        self.heading = np.zeros(0)
        self.heading_std = np.zeros(0)
        self.dims = np.zeros((0, 3))
        self.dims_std = np.zeros((0, 3))
        self.z = np.zeros(0)
        self.cam = np.zeros(0, np.int64)

    # ---------------------------------------------------------------- public

    def set_config(self, config: TrackerConfig) -> None:
        with self._lock:
            self.config = config

    def counts(self) -> tuple[int, int]:
        """(live tracks, confirmed tracks)."""
        with self._lock:
            return len(self.ids), int(self.confirmed.sum())

    def reset(self) -> None:
        """Drop every track (ids keep counting: never reused)."""
        with self._lock:
            self._keep(np.zeros(len(self.ids), bool))

    def step(self, m: Measurements) -> StepResult:
        """Predict every track to ``m.stamp_ns``, associate and update with ``m``, birth, prune, report."""
        with self._lock:
            cfg = self.config
            t = int(m.stamp_ns)
            cam = self._camera_code(m.camera)
            self._predict(t)
            group, dims, dims_std, speed_std = self.priors.lookup(m.class_ids)
            dims = adjust_dims(dims, m.box_width_m)
            oc = m.offset_classes()
            _, odims, odims_std, _ = self.priors.lookup(oc)
            off, var = contact_offset(odims, odims_std, m.ray_angle)
            k = self.priors.contact_of(oc) * m.offset_scale()
            z, R = _measurement(m.contact, m.contact_cov, m.ray_angle, off * k, var * k * k + m.along_var())
            trk, det = self._associate(m.scores, group, z, R, cfg, t)
            if len(trk):
                z, R, dims = self._refine(m, trk, det, z, R, dims, dims_std)
                self._update(trk, det, z, R, m, dims, t, cam)
                self._update_heading(trk)
            matched = np.zeros(len(m), bool)
            matched[det] = True
            # a measurement whose ground contact is hidden is too far off to start a track
            sure = np.ones(len(m), bool) if m.extra_var is None else m.extra_var <= BIRTH_MAX_EXTRA_VAR
            births = np.flatnonzero(~matched & (m.scores >= cfg.high_score) & sure)
            track_idx = np.full(len(m), -1, np.int64)
            track_idx[det] = trk
            if len(births):
                track_idx[births] = self._birth(births, m, z, R, group, dims, dims_std, speed_std, t, cam)
            track_idx = self._prune(t, track_idx, cfg)
            return self._report(m, track_idx, t)

    # ---------------------------------------------------------------- filter

    def _camera_code(self, camera: str) -> int:
        if camera not in self._cameras:
            self._cameras.append(camera)
        return self._cameras.index(camera)

    def _predict(self, t: int) -> None:
        n = len(self.ids)
        if not n:
            return
        dt = np.maximum(0, t - self.stamp) / NS_PER_S
        if not dt.any():
            return
        q = self.config.accel_sigma ** 2
        F = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()
        F[:, 0, 2] = F[:, 1, 3] = dt
        self.X[:, :2] += dt[:, None] * self.X[:, 2:]
        P = F @ self.P @ F.transpose(0, 2, 1)
        qpp, qpv, qvv = q * dt ** 3 / 3.0, q * dt ** 2 / 2.0, q * dt
        P[:, 0, 0] += qpp
        P[:, 1, 1] += qpp
        P[:, 0, 2] += qpv
        P[:, 2, 0] += qpv
        P[:, 1, 3] += qpv
        P[:, 3, 1] += qpv
        P[:, 2, 2] += qvv
        P[:, 3, 3] += qvv
        self.P = P
        self.stamp = np.maximum(self.stamp, t)

    def _observed(self, ti: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tracks ``ti`` as a frame at ``t`` sees them: ``H X``, ``H P H^T`` and ``P H^T``.

        ``H = [I, -lag I]`` with ``lag = state time - t >= 0``: a late frame (out of stamp order)
        measures where the track was ``lag`` seconds before its state, without predicting backwards.
        """
        X, P = self.X[ti], self.P[ti]
        lag = np.maximum(0, self.stamp[ti] - t) / NS_PER_S
        if not lag.any():
            return X[:, :2], P[:, :2, :2], P[:, :, :2]
        L = lag[:, None, None]
        PHt = P[:, :, :2] - L * P[:, :, 2:]
        return X[:, :2] - lag[:, None] * X[:, 2:], PHt[:, :2] - L * PHt[:, 2:], PHt

    def _cost(self, ti: np.ndarray, dj: np.ndarray, group: np.ndarray, z: np.ndarray, R: np.ndarray,
              gate_m: float, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared Mahalanobis distances (Ti, Dj) and which pairs pass every gate."""
        pos, HPHt, _ = self._observed(ti, t)
        Pt, Rd = HPHt.reshape(-1, 4), R[dj].reshape(-1, 4)
        a = Pt[:, 0, None] + Rd[None, :, 0]
        b = Pt[:, 1, None] + Rd[None, :, 1]  # S is symmetric: S01 == S10
        d = Pt[:, 3, None] + Rd[None, :, 3]
        ex = z[None, dj, 0] - pos[:, 0, None]
        ey = z[None, dj, 1] - pos[:, 1, None]
        d2 = (d * ex * ex - 2.0 * b * ex * ey + a * ey * ey) / (a * d - b * b)
        ok = (d2 <= CHI2_GATE) & (ex * ex + ey * ey <= gate_m * gate_m) & (self.group[ti, None] == group[None, dj])
        return d2, ok

    def _match(self, ti: np.ndarray, dj: np.ndarray, group: np.ndarray, z: np.ndarray, R: np.ndarray,
               gate_m: float, t: int) -> tuple[np.ndarray, np.ndarray]:
        if not len(ti) or not len(dj):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        d2, ok = self._cost(ti, dj, group, z, R, gate_m, t)
        if not ok.any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        from scipy.optimize import linear_sum_assignment  # here: importing scipy.optimize takes 0.5 s at start-up

        r, c = linear_sum_assignment(np.where(ok, d2, FORBIDDEN))
        keep = ok[r, c]
        return ti[r[keep]], dj[c[keep]]

    def _associate(self, scores: np.ndarray, group: np.ndarray, z: np.ndarray, R: np.ndarray,
                   cfg: TrackerConfig, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Matched (track index, measurement index) pairs of both passes."""
        all_t = np.arange(len(self.ids))
        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))
        t1, d1 = self._match(all_t, high, group, z, R, cfg.gate_m, t)
        free = np.ones(len(self.ids), bool)
        free[t1] = False
        t2, d2 = self._match(np.flatnonzero(free & self.confirmed), low, group, z, R, cfg.gate_m, t)
        return np.concatenate([t1, t2]), np.concatenate([d1, d2])

    def _refine(self, m: Measurements, trk: np.ndarray, det: np.ndarray, z: np.ndarray, R: np.ndarray,
                dims: np.ndarray, dims_std: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The contact correction and box-width dimensions of matched measurements, with their track's heading."""
        hstd = self.heading_std[trk]
        known = hstd < math.pi / 4
        if m.contact_class is not None:  # a rider keeps its vehicle's correction; NO_OFFSET needs none
            known &= m.contact_class[det] == -1
        if not known.any():
            return z, R, dims
        k_t, k_d = trk[known], det[known]
        heading, ray = self.heading[k_t], m.ray_angle[k_d]
        d = adjust_dims(self.dims[k_t], m.box_width_m[k_d], ray - heading)
        off, var = contact_offset(d, dims_std[k_d], ray, heading, hstd[known])
        k = self.priors.contact_of(m.class_ids[k_d])
        z, R, dims = z.copy(), R.copy(), dims.copy()
        z[k_d], R[k_d] = _measurement(m.contact[k_d], m.contact_cov[k_d], ray, off * k, var * k * k + m.along_var(k_d))
        dims[k_d] = d
        return z, R, dims

    def _update(self, trk: np.ndarray, det: np.ndarray, z: np.ndarray, R: np.ndarray, m: Measurements,
                dims: np.ndarray, t: int, cam: int) -> None:
        pos, HPHt, PHt = self._observed(trk, t)
        S = HPHt + R[det]
        K = PHt @ np.linalg.inv(S)  # (M, 4, 2)
        X = self.X[trk] + (K @ (z[det] - pos)[:, :, None])[:, :, 0]
        P = self.P[trk] - K @ S @ K.transpose(0, 2, 1)
        self.X[trk], self.P[trk] = X, 0.5 * (P + P.transpose(0, 2, 1))
        s = m.scores[det].astype(np.float64)
        self.hits[trk] += 1
        self.last[trk] = np.maximum(self.last[trk], t)
        self.exist[trk] = 1.0 - (1.0 - self.exist[trk]) * (1.0 - EXISTENCE_GAIN * s)
        cid = self._class_columns(m.class_ids[det])
        self.cls[trk, cid] += s
        self.dims[trk] = (1.0 - DIMS_ALPHA) * self.dims[trk] + DIMS_ALPHA * dims[det]
        self.z[trk] = m.ground_z
        self.cam[trk] = cam
        self.confirmed[trk] |= self.hits[trk] >= self.config.confirm_hits

    def _class_columns(self, class_ids: np.ndarray) -> np.ndarray:
        cid = np.maximum(np.asarray(class_ids, np.int64), 0)
        if len(cid) and cid.max() >= self.cls.shape[1]:
            self.cls = np.pad(self.cls, ((0, 0), (0, int(cid.max()) + 1 - self.cls.shape[1])))
        return cid

    def _birth(self, births: np.ndarray, m: Measurements, z: np.ndarray, R: np.ndarray, group: np.ndarray,
               dims: np.ndarray, dims_std: np.ndarray, speed_std: np.ndarray, t: int, cam: int) -> np.ndarray:
        """Start tentative tracks at measurements ``births``; their track indices."""
        n = len(births)
        X = np.zeros((n, 4))
        X[:, :2] = z[births]
        P = np.zeros((n, 4, 4))
        P[:, :2, :2] = R[births]
        P[:, 2, 2] = P[:, 3, 3] = speed_std[births] ** 2
        cid = self._class_columns(m.class_ids[births])
        cls = np.zeros((n, self.cls.shape[1]))
        s = m.scores[births].astype(np.float64)
        cls[np.arange(n), cid] = s
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        stamp = np.full(n, t, np.int64)
        new = {
            "ids": ids, "X": X, "P": P, "stamp": stamp, "born": stamp, "last": stamp, "hits": np.ones(n, np.int64),
            "confirmed": np.full(n, self.config.confirm_hits <= 1), "group": group[births], "cls": cls,
            "exist": EXISTENCE_GAIN * s, "heading": np.zeros(n), "heading_std": np.full(n, HEADING_UNKNOWN_STD),
            "dims": dims[births], "dims_std": dims_std[births], "z": np.full(n, m.ground_z),
            "cam": np.full(n, cam, np.int64),
        }
        first = len(self.ids)
        for name in _ARRAYS:
            setattr(self, name, np.concatenate([getattr(self, name), new[name]]))
        return np.arange(first, first + n, dtype=np.int64)

    def _update_heading(self, idx: np.ndarray) -> None:
        """Heading of tracks ``idx`` from their velocity where it is significant; kept otherwise."""
        vx, vy = self.X[idx, 2], self.X[idx, 3]
        sxx, sxy, syy = self.P[idx, 2, 2], self.P[idx, 2, 3], self.P[idx, 3, 3]
        speed2 = vx * vx + vy * vy
        safe = np.maximum(speed2, 1e-12)
        hvar = (vy * vy * sxx - 2.0 * vx * vy * sxy + vx * vx * syy) / (safe * safe)  # g P g^T, g = d heading / d v
        svar = (vx * vx * sxx + 2.0 * vx * vy * sxy + vy * vy * syy) / safe  # variance of the speed along v
        moving = (speed2 >= HEADING_MIN_SPEED ** 2) & (speed2 >= 4.0 * svar)
        self.heading[idx] = np.where(moving, np.arctan2(vy, vx), self.heading[idx])
        self.heading_std[idx] = np.where(moving, np.sqrt(np.minimum(hvar, HEADING_UNKNOWN_STD ** 2)),
                                         self.heading_std[idx])

    def _duplicates(self, fresh: np.ndarray) -> np.ndarray:
        """For each track, the track it duplicates (an index), or -1.

        Two tracks of one group closer than :data:`MERGE_FRACTION` of the smaller one's length (at
        least :data:`MERGE_MIN_M`), or within :data:`MERGE_CHI2` of each other's spread and
        :data:`MERGE_MAX_M`, with velocities within :data:`MERGE_SPEED_MPS`, are one object that two
        cameras (or a missed association) started twice: the one with fewer hits goes, and
        measurements matched to it count for the other. Two tracks this frame's detections both
        updated are two objects.
        """
        n = len(self.ids)
        into = np.full(n, -1, np.int64)
        if n < 2:
            return into
        xy = self.X[:, :2]
        d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
        cand = (d < MERGE_MAX_M) & (self.group[:, None] == self.group[None, :]) & ~(fresh[:, None] & fresh[None, :])
        i, j = np.nonzero(np.triu(cand, 1))
        if not len(i):
            return into
        reach = np.maximum(MERGE_MIN_M, MERGE_FRACTION * np.minimum(self.dims[i, 0], self.dims[j, 0]))
        S = self.P[i, :2, :2] + self.P[j, :2, :2]
        e = xy[i] - xy[j]
        det = S[:, 0, 0] * S[:, 1, 1] - S[:, 0, 1] * S[:, 1, 0]
        m2 = (S[:, 1, 1] * e[:, 0] ** 2 - 2 * S[:, 0, 1] * e[:, 0] * e[:, 1] + S[:, 0, 0] * e[:, 1] ** 2) / det
        alike = np.linalg.norm(self.X[i, 2:] - self.X[j, 2:], axis=1) < MERGE_SPEED_MPS
        close = alike & ((d[i, j] < reach) | (m2 < MERGE_CHI2))
        holds = fresh.copy()  # a merged group holds a track this frame updated: it takes no second one
        for a, b in zip(i[close].tolist(), j[close].tolist()):
            while into[a] >= 0:
                a = int(into[a])
            while into[b] >= 0:
                b = int(into[b])
            if a == b or (holds[a] and holds[b]):
                continue
            keep, gone = (a, b) if (self.hits[a], -self.ids[a]) >= (self.hits[b], -self.ids[b]) else (b, a)
            into[gone] = keep
            holds[keep] |= holds[gone]
            self.confirmed[keep] |= self.confirmed[gone]
            self.last[keep] = max(self.last[keep], self.last[gone])
        return into

    def _prune(self, t: int, track_idx: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
        """Delete stale and duplicate tracks; the measurement -> track index map re-indexed (-1 where deleted)."""
        fresh = np.zeros(len(self.ids), bool)
        fresh[track_idx[track_idx >= 0]] = True
        into = self._duplicates(fresh)
        merged = into >= 0
        if merged.any():
            root = np.arange(len(into))
            for k in np.flatnonzero(merged):
                r = int(k)
                while into[r] >= 0:
                    r = int(into[r])
                root[k] = r
            ok = track_idx >= 0
            track_idx = track_idx.copy()
            track_idx[ok] = root[track_idx[ok]]
        since = (t - self.last) / NS_PER_S
        max_age = np.where(self.confirmed, cfg.max_age_s, cfg.max_age_s * TENTATIVE_AGE_FRACTION)
        keep = (since <= max_age) & ~merged
        if keep.all():
            return track_idx
        new_index = np.cumsum(keep) - 1
        self._keep(keep)
        ok = track_idx >= 0
        out = np.full_like(track_idx, -1)
        out[ok] = np.where(keep[track_idx[ok]], new_index[track_idx[ok]], -1)
        return out

    def _keep(self, keep: np.ndarray) -> None:
        for name in _ARRAYS:
            setattr(self, name, getattr(self, name)[keep])

    # ---------------------------------------------------------------- output

    def _objects(self, idx: np.ndarray, t: int) -> list[WorldObject]:
        """WorldObjects of tracks ``idx`` at stamp ``t`` (no box; a state later than ``t`` is taken back along its velocity)."""
        n = len(idx)
        if not n:
            return []
        best = self.cls[idx].argmax(axis=1)
        score = np.minimum(1.0, self.cls[idx, best] / np.maximum(self.hits[idx], 1))
        since = np.maximum(0, t - self.last[idx]) / NS_PER_S
        X, P, dims = self.X[idx], self.P[idx], self.dims[idx]
        pos, pos_cov, _ = self._observed(idx, t)  # at t also for tracks a later frame has moved on
        names = [class_name(self.class_names, c) for c in range(self.cls.shape[1])]
        cams = self._cameras
        columns = (
            self.ids[idx].tolist(), [t] * n, [cams[c] for c in self.cam[idx].tolist()], best.tolist(),
            [names[c] for c in best.tolist()], score.tolist(), pos[:, 0].tolist(), pos[:, 1].tolist(),
            self.z[idx].tolist(), map(tuple, pos_cov.reshape(-1, 4).tolist()), X[:, 2].tolist(),
            X[:, 3].tolist(), map(tuple, P[:, 2:, 2:].reshape(-1, 4).tolist()), self.heading[idx].tolist(),
            self.heading_std[idx].tolist(), dims[:, 0].tolist(), dims[:, 1].tolist(), dims[:, 2].tolist(),
            (np.maximum(0, t - self.born[idx]) / NS_PER_S).tolist(), self.hits[idx].tolist(),
            self.confirmed[idx].tolist(), (self.exist[idx] * np.exp(-since / self.config.max_age_s)).tolist(),
            [None] * n, [0.0] * n,
        )
        out = []
        for row in zip(*columns):
            obj = _new(WorldObject)
            obj.__dict__.update(zip(_FIELDS, row))
            out.append(obj)
        return out

    def _report(self, m: Measurements, track_idx: np.ndarray, t: int) -> StepResult:
        ok = track_idx >= 0
        ok[ok] = self.confirmed[track_idx[ok]]
        track_ids = np.zeros(len(m), np.int64)
        track_ids[ok] = self.ids[track_idx[ok]]
        det = np.flatnonzero(ok)
        seen = np.zeros(len(self.ids), bool)
        seen[track_idx[det]] = True
        # the fused output: confirmed tracks some camera saw lately (coasting ones are kept, not published)
        recent = self.confirmed & (seen | (np.maximum(0, t - self.last) <= FUSED_MAX_GAP_S * NS_PER_S))
        conf = np.flatnonzero(recent)
        fused = self._objects(conf, t)
        pos = np.full(len(self.ids), -1, np.int64)
        pos[conf] = np.arange(len(conf))
        objects = []
        for j, box, score in zip(pos[track_idx[det]].tolist(), m.boxes[det].tolist(), m.scores[det].tolist()):
            obj = _new(WorldObject)
            obj.__dict__.update(fused[j].__dict__, box=tuple(box), detection_score=float(score))
            objects.append(obj)
        return StepResult(track_ids, objects, fused)


_FIELDS = tuple(f.name for f in dataclasses.fields(WorldObject))


# WorldObjects are built with ``_new`` and ``__dict__.update`` over every field (``_FIELDS``): the same
# objects ``WorldObject(**values)`` builds, without the frozen dataclass's per-field __init__ (the
# outputs hold every confirmed track of every frame; this is a third of the cost).
_new = object.__new__


def _measurement(contact: np.ndarray, cov: np.ndarray, ray_angle: np.ndarray, off: np.ndarray,
                 var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Footprint centres (N, 2) and their covariance (N, 2, 2): the contact points moved ``off`` along the rays.

    The covariance adds ``var`` along the ray and the floor :data:`MIN_POS_STD_M` in every direction.
    """
    c, s = np.cos(ray_angle), np.sin(ray_angle)
    z = contact + off[:, None] * np.stack([c, s], axis=1)
    R = cov.copy()
    floor = MIN_POS_STD_M ** 2
    R[:, 0, 0] += var * c * c + floor
    R[:, 1, 1] += var * s * s + floor
    R[:, 0, 1] += var * c * s
    R[:, 1, 0] += var * c * s
    return z, R
