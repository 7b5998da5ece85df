"""The rclpy-free core: model contract, inference, conversions, metrics and statistics.

Nothing here imports rclpy; the training package may import these modules.
"""
