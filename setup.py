"""ament_python package setup for dpa_perception."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dpa_perception"
TEST_REQUIRES = ["pytest>=7,<9.1"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["demo/assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "simplejpeg>=1.6",  # strict libjpeg-turbo JPEG decoding: truncated/corrupt scans refused, header first
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "rosbags>=0.10",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "scipy>=1.8",  # linear_sum_assignment for the tracker
        "pymap3d>=3.0",  # dpa-calibrate: surveyed latitude/longitude -> local ENU metres (geodetic2enu)
    ],
    # colcon picks pytest for `colcon test` from the "test" extra (colcon-core has_test_dependency).
    # pytest < 9.1: pytest 9.2 breaks the launch_testing plugin of ROS 2 Humble and Jazzy
    # (PluginValidationError on pytest_pycollect_makemodule); 7.4, 8.3 and 9.0 work.
    extras_require={
        "test": TEST_REQUIRES,
        "dev": [
            *TEST_REQUIRES,
            "ruff>=0.5",
            "mypy>=1.10",
            "types-PyYAML",
            "colcon-common-extensions",  # test/test_colcon.py: colcon build + colcon test on this package
            "motmetrics>=1.4",  # dpa-eval --tracks: CLEAR MOT / IDF1 (test/test_track_eval.py)
        ],
        "tensorrt": ["tensorrt>=10"],
    },
    zip_safe=True,
    maintainer="dpa_perception developers",
    maintainer_email="dev@dpa-perception.local",
    description="Roadside-unit perception: dual-precision (INT8 / high) detector with a latency governor.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "dpa-build = dpa_perception.tools.build:main",
            "dpa-detect = dpa_perception.tools.detect:main",
            "dpa-bench = dpa_perception.tools.bench:main",
            "dpa-replay = dpa_perception.tools.replay:main",
            "dpa-demo-bag = dpa_perception.demo.make_bag:main",
            "dpa-eval = dpa_perception.demo.evaluate:main",
            "dpa-calibrate = dpa_perception.tools.calibrate:main",
            "dpa_perception_node = dpa_perception.tools.node_entry:main",
        ],
    },
)
