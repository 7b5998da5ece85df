"""Optional tools around the node: the demo, the benchmark, a frame source, DDS profiles."""
