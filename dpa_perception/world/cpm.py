"""World objects as ETSI TS 103 324 (CPM, Release 2) ``PerceivedObject`` records, JSON-ready.

Field names and value ranges follow the ASN.1 of TS 103 324 V2.1.1 and the common data
dictionary TS 102 894-2 V2.1.1; every value is an integer in the unit of its data element, clipped
to its range (out-of-range and unavailable codes as the standard defines them):

- ``objectId`` Identifier2B (0..65535): the track id modulo 65536.
- ``measurementDeltaTime`` DeltaTimeMilliSecondSigned (-2048..2047, ms): object stamp minus the
  reference (generation) time.
- ``position`` CartesianPosition3dWithConfidence: x east, y north, z up from the reference
  position (the world frame's origin), CartesianCoordinateLarge (-131072..131071, 0.01 m) with
  CoordinateConfidence (1..4096, 0.01 m at 95 %: 4095 out of range, 4096 unavailable). The
  position is the centre of the footprint on the ground; z has no confidence (4096).
- ``velocity.cartesianVelocity`` x/yVelocity: VelocityComponentValue (-16383..16383, 0.01 m/s)
  with SpeedConfidence (1..127, 0.01 m/s at 95 %: 126 out of range, 127 unavailable).
- ``angles.zAngle`` CartesianAngle: CartesianAngleValue (0..3599, 0.1 degree; 3601 unavailable)
  counted counter-clockwise from the x axis (east) in the right-handed local frame — the CDD's
  convention, *not* the clockwise-from-north heading of a CAM — with AngleConfidence (1..127,
  0.1 degree at 95 %: 126 out of range, 127 unavailable).
- ``objectDimensionX/Y/Z`` ObjectDimension: length (along zAngle), width, height;
  ObjectDimensionValue (1..256, 0.1 m) with ObjectDimensionConfidence (1..32, 0.1 m at 95 %:
  31 out of range, 32 unavailable) from the class prior's spread.
- ``objectAge`` DeltaTimeMilliSecondSigned (0..2047, ms): capped at 2047.
- ``objectPerceptionQuality`` ObjectPerceptionQuality (0..15): the existence probability x 15.
- ``classification`` ObjectClassDescription: ObjectClassWithConfidence entries,
  ``objectClass`` a CHOICE (``vehicleSubClass`` TrafficParticipantType, ``vruSubClass``
  VruProfileAndSubprofile, ``otherSubClass``) and ``confidence`` ConfidenceLevel (1..101, percent).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from dpa_perception.core.types import NS_PER_S
from dpa_perception.world.objects import WorldObject
from dpa_perception.world.priors import class_prior

Z95 = 1.959964  # two-sided 95 % of a normal distribution: confidences are 95 % half-widths

# TrafficParticipantType (CDD)
PASSENGER_CAR, BUS, LIGHT_TRUCK, HEAVY_TRUCK = 5, 6, 7, 8
HEAVY_TRUCK_LENGTH_M = 8.0  # a COCO "truck" longer than this is a heavyTruck, else a lightTruck
# VruSubProfilePedestrian ordinary-pedestrian, VruSubProfileBicyclist bicyclist, VruSubProfileMotorcyclist motorcycle
ORDINARY_PEDESTRIAN, BICYCLIST, MOTORCYCLE = 1, 1, 2
OTHER_SINGLE_OBJECT = 1  # OtherSubClass singleObject


def _clip_int(v: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, v)))


def _coordinate(value_m: float, var_m2: float | None) -> dict[str, int]:
    conf = 4096 if var_m2 is None else _confidence(var_m2, 100.0, 4094, 4095)
    return {"value": _clip_int(round(value_m * 100.0), -131072, 131071), "confidence": conf}


def _confidence(var: float, per_unit: float, max_value: int, out_of_range: int) -> int:
    """95 % half-width of a variance in units of ``1 / per_unit``: at least 1, ``out_of_range`` above ``max_value``."""
    if not math.isfinite(var) or var < 0:
        return out_of_range + 1  # unavailable
    c = math.ceil(Z95 * math.sqrt(var) * per_unit)
    return out_of_range if c > max_value else max(1, c)


def _velocity(v: float, var: float) -> dict[str, int]:
    value = round(v * 100.0)
    value = -16383 if value <= -16383 else (16382 if value >= 16382 else value)  # -16383 / 16382: out of range
    return {"value": value, "confidence": _confidence(var, 100.0, 125, 126)}


def _dimension(value_m: float, std_m: float) -> dict[str, int]:
    return {"value": _clip_int(math.ceil(value_m * 10.0 - 1e-9), 1, 256),
            "confidence": _confidence(std_m * std_m, 10.0, 30, 31)}


def object_class(obj: WorldObject) -> dict[str, Any]:
    """The ObjectClass CHOICE of a detector class name."""
    name = obj.class_name
    if name == "person":
        return {"vruSubClass": {"pedestrian": ORDINARY_PEDESTRIAN}}
    if name == "bicycle":
        return {"vruSubClass": {"bicyclistAndLightVruVehicle": BICYCLIST}}
    if name == "motorcycle":
        return {"vruSubClass": {"motorcyclist": MOTORCYCLE}}
    if name == "car":
        return {"vehicleSubClass": PASSENGER_CAR}
    if name == "bus":
        return {"vehicleSubClass": BUS}
    if name == "truck":
        return {"vehicleSubClass": HEAVY_TRUCK if obj.length > HEAVY_TRUCK_LENGTH_M else LIGHT_TRUCK}
    return {"otherSubClass": OTHER_SINGLE_OBJECT}


def perceived_object(obj: WorldObject, reference_stamp_ns: int) -> dict[str, Any]:
    """One CPM PerceivedObject (JSON-ready, ASN.1 field names) of ``obj``, relative to the reference time."""
    pc, vc = obj.position_cov, obj.velocity_cov
    prior = class_prior(obj.class_name)
    delta_ms = round((obj.stamp_ns - reference_stamp_ns) * 1000 / NS_PER_S)
    heading_deg = math.degrees(obj.heading) % 360.0
    z_angle = round(heading_deg * 10.0) % 3600
    return {
        "objectId": int(obj.track_id) % 65536,
        "measurementDeltaTime": _clip_int(delta_ms, -2048, 2047),
        "position": {
            "xCoordinate": _coordinate(obj.x, pc[0]),
            "yCoordinate": _coordinate(obj.y, pc[3]),
            "zCoordinate": _coordinate(obj.z, None),
        },
        "velocity": {"cartesianVelocity": {"xVelocity": _velocity(obj.vx, vc[0]),
                                           "yVelocity": _velocity(obj.vy, vc[3])}},
        "angles": {"zAngle": {"value": z_angle,
                              "confidence": _confidence(math.degrees(obj.heading_std) ** 2, 10.0, 125, 126)}},
        "objectDimensionX": _dimension(obj.length, prior.length_std),
        "objectDimensionY": _dimension(obj.width, prior.width_std),
        "objectDimensionZ": _dimension(obj.height, prior.height_std),
        "objectAge": _clip_int(round(obj.age_s * 1000.0), 0, 2047),
        "objectPerceptionQuality": _clip_int(math.floor(obj.existence * 15.0 + 1e-9), 0, 15),
        "classification": [{"objectClass": object_class(obj),
                            "confidence": _clip_int(round(obj.class_score * 100.0), 1, 100)}],
    }


def cpm_objects(objects: Iterable[WorldObject], reference_stamp_ns: int) -> dict[str, Any]:
    """A PerceivedObjectContainer: ``numberOfPerceivedObjects`` (at most 255) and ``perceivedObjects``."""
    po = [perceived_object(o, reference_stamp_ns) for o in objects][:255]
    return {"numberOfPerceivedObjects": len(po), "perceivedObjects": po}
