"""Data sets: the source data sets, ``fvt-train prepare``, prepared folders, the input pipeline."""
