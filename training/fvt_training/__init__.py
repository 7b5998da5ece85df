"""fvt_training: prepare data, train, evaluate and export segmentation models for the node.

The only place that configures the Keras flavour: tensorflow 2.21 with segmentation-models
1.0.1 works only through tf-keras (legacy Keras 2), and both variables must be set before
anything imports tensorflow or segmentation_models. Every module of this package is imported
through this file first, so setting them here covers the CLI, the tests and library use.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('SM_FRAMEWORK', 'tf.keras')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

__version__ = '0.1.0'
