"""World-frame output: camera geometry, ground projection, multi-object tracking, V2X object records.

ROS-free, at the level of :mod:`dpa_perception.core` (imports only core, numpy, OpenCV, scipy):

- :mod:`.objects`: :class:`~.objects.WorldObject`, the one record of a tracked object that every
  output (Detection3DArray, tracks.jsonl, the CPM-style JSON) is a pure function of.
- :mod:`.geometry`: per-camera geometry (an image-to-ground homography, or intrinsics + distortion
  + pose + ground plane) and the projection of boxes to the ground with covariance.
- :mod:`.priors`: class priors (typical dimensions, ground-contact correction).
- :mod:`.tracker`: constant-velocity Kalman tracks in the world frame, Hungarian assignment,
  ByteTrack-style low-score second pass, one tracker for all cameras (overlapping views fuse).
- :mod:`.stage`: the stage the pipeline runs after detection (projection + tracking, timed).
- :mod:`.calibration`: the homography from surveyed point pairs (``dpa-calibrate``).
"""
