"""fvt_training: prepare data, train, evaluate and export segmentation models for the node.

The only place that configures the Keras flavour: tensorflow 2.21 with segmentation-models
1.0.1 works only through tf-keras (legacy Keras 2), and both variables must be set before
anything imports tensorflow or segmentation_models. Every module of this package is imported
through this file first, so setting them here covers the CLI, the tests and library use.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('SM_FRAMEWORK', 'tf.keras')
# TensorFlow's C++ log: 2 hides INFO and WARNING. Without an NVIDIA driver (no
# /proc/driver/nvidia, so no GPU can be used) 3 also hides the ERROR lines of a CPU-only
# start: the failed GPU probe (`failed call to cuInit ... (303)`) and grappler's
# `remapper failed` (the graph then runs unfused). An error that stops work still arrives in
# full as a Python exception, and FATAL lines still print. A GPU machine keeps 2, so cuDNN or
# memory errors show; a value set by the user is kept (0 shows everything).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL',
                      '2' if os.path.exists('/proc/driver/nvidia') else '3')

__version__ = '0.1.0'
