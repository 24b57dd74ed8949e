"""CPM PerceivedObject records: units, conventions, ASN.1 ranges."""

from __future__ import annotations

import json
import math

import pytest

from dpa_perception.world.cpm import cpm_objects, perceived_object
from dpa_perception.world.objects import WorldObject

REF = 1_700_000_000_000_000_000


def obj(**kw) -> WorldObject:
    base = dict(track_id=7, stamp_ns=REF - 40_000_000, camera="/rsu/cam0/image_raw", class_id=2, class_name="car",
                class_score=0.83, x=12.345, y=-3.2, z=0.1, position_cov=(0.04, 0.01, 0.01, 0.25), vx=1.5, vy=-10.0,
                velocity_cov=(0.09, 0.0, 0.0, 0.36), heading=math.pi / 2, heading_std=math.radians(2.0), length=4.52,
                width=1.8, height=1.5, age_s=1.2, hits=12, confirmed=True, existence=0.9)
    base.update(kw)
    return WorldObject(**base)


def test_units_and_confidences():
    po = perceived_object(obj(), REF)
    assert po["objectId"] == 7
    assert po["measurementDeltaTime"] == -40
    x, y, z = (po["position"][k] for k in ("xCoordinate", "yCoordinate", "zCoordinate"))
    assert x == {"value": 1234, "confidence": math.ceil(1.959964 * 0.2 * 100)}  # cm, 95 %
    assert y == {"value": -320, "confidence": math.ceil(1.959964 * 0.5 * 100)}
    assert z == {"value": 10, "confidence": 4096}  # unavailable
    vel = po["velocity"]["cartesianVelocity"]
    assert vel["xVelocity"] == {"value": 150, "confidence": math.ceil(1.959964 * 0.3 * 100)}
    assert vel["yVelocity"] == {"value": -1000, "confidence": math.ceil(1.959964 * 0.6 * 100)}
    assert po["angles"]["zAngle"] == {"value": 900, "confidence": math.ceil(1.959964 * 2.0 * 10)}
    assert po["objectDimensionX"]["value"] == 46 and po["objectDimensionY"]["value"] == 18  # dm, rounded up
    assert po["objectDimensionZ"]["value"] == 15
    assert 1 <= po["objectDimensionX"]["confidence"] <= 32
    assert po["objectAge"] == 1200
    assert po["objectPerceptionQuality"] == 13
    assert po["classification"] == [{"objectClass": {"vehicleSubClass": 5}, "confidence": 83}]
    json.dumps(po)


@pytest.mark.parametrize("heading, value", [(0.0, 0), (math.pi / 2, 900), (math.pi, 1800), (-math.pi / 2, 2700),
                                            (-1e-6, 0), (2 * math.pi + 0.1, 57)])
def test_z_angle_counts_counter_clockwise_from_east(heading, value):
    assert perceived_object(obj(heading=heading), REF)["angles"]["zAngle"]["value"] == value


def test_values_are_clipped_to_the_asn1_ranges():
    po = perceived_object(obj(track_id=65536 + 3, stamp_ns=REF + 10**10, x=5000.0, y=-5000.0, vx=400.0, vy=-400.0,
                              position_cov=(1e4, 0.0, 0.0, 1e4), velocity_cov=(100.0, 0.0, 0.0, float("inf")),
                              heading_std=1.5, length=40.0, width=0.01, age_s=100.0, existence=1.0,
                              class_score=0.0), REF - 10**10)
    assert po["objectId"] == 3
    assert po["measurementDeltaTime"] == 2047
    assert po["position"]["xCoordinate"] == {"value": 131071, "confidence": 4095}  # out of range
    assert po["position"]["yCoordinate"]["value"] == -131072
    assert po["velocity"]["cartesianVelocity"]["xVelocity"] == {"value": 16382, "confidence": 126}
    assert po["velocity"]["cartesianVelocity"]["yVelocity"] == {"value": -16383, "confidence": 127}  # unavailable
    assert po["angles"]["zAngle"]["confidence"] == 126
    assert po["objectDimensionX"]["value"] == 256 and po["objectDimensionY"]["value"] == 1
    assert po["objectAge"] == 2047
    assert po["objectPerceptionQuality"] == 15
    assert po["classification"][0]["confidence"] == 1
    assert perceived_object(obj(stamp_ns=REF - 10**10), REF)["measurementDeltaTime"] == -2048


@pytest.mark.parametrize("name, length, expected", [
    ("person", 0.5, {"vruSubClass": {"pedestrian": 1}}),
    ("bicycle", 1.7, {"vruSubClass": {"bicyclistAndLightVruVehicle": 1}}),
    ("motorcycle", 2.1, {"vruSubClass": {"motorcyclist": 2}}),
    ("bus", 12.0, {"vehicleSubClass": 6}),
    ("truck", 5.5, {"vehicleSubClass": 7}),
    ("truck", 9.5, {"vehicleSubClass": 8}),
    ("traffic light", 0.5, {"otherSubClass": 1}),
])
def test_classification(name, length, expected):
    assert perceived_object(obj(class_name=name, length=length), REF)["classification"][0]["objectClass"] == expected


def test_container_wraps_and_caps_the_list():
    c = cpm_objects([obj(track_id=i) for i in range(1, 4)], REF)
    assert c["numberOfPerceivedObjects"] == 3 and [p["objectId"] for p in c["perceivedObjects"]] == [1, 2, 3]
    assert cpm_objects((obj(track_id=i) for i in range(1, 300)), REF)["numberOfPerceivedObjects"] == 255
    assert cpm_objects([], REF) == {"numberOfPerceivedObjects": 0, "perceivedObjects": []}
