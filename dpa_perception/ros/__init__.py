"""ROS 2 layer of dpa_perception: the lifecycle node and its ROS-facing helpers.

Only :mod:`dpa_perception.ros.node` imports rclpy at module level; :mod:`.conversions`,
:mod:`.diagnostics` and :mod:`.qos` import without a ROS installation (their ROS parts import lazily).
"""
