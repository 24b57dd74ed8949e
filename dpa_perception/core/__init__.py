"""ROS-free core: everything that decides lives here and is tested on every CI run."""
