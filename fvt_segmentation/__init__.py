"""fvt_segmentation: real-time semantic segmentation for the FVT vision stack."""

__version__ = '0.1.0'
