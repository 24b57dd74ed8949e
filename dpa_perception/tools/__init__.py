"""Offline tools: engine builder, detect, benchmark, rosbag replay."""
