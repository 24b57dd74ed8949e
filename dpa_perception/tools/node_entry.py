"""``dpa_perception_node``: the console entry of the ROS 2 node, one error line where ROS 2 is missing.

The node module imports ``rclpy`` and the message packages at import time; run outside a sourced
ROS 2 workspace, a console script pointing at it straight would end in an ImportError traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

PROG = "dpa_perception_node"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from dpa_perception.ros.node import main as node_main
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        print(f"{PROG}: error: ROS 2 is not available ({missing} cannot be imported); source a ROS 2 "
              f"workspace (e.g. /opt/ros/humble/setup.bash) and run it with ros2 run dpa_perception "
              f"{PROG}", file=sys.stderr)  # fmt: skip
        return 2
    node_main(list(argv) if argv is not None else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
