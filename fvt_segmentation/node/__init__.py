"""The ROS 2 node: parameters, the latest-frame slots, outputs, diagnostics, rclpy fallbacks."""
