"""Scoring models: ``fvt-train evaluate`` and ``compare``, timing, parameters and FLOPs."""
