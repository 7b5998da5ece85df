"""Names of the files in a run folder.

Kept apart from ``train.py`` so that tools that only read runs (``fvt-train compare``) do not
import TensorFlow.
"""

CONFIG_FILE = 'config.yaml'
STATE_FILE = 'state.json'
BEST_WEIGHTS = 'best.weights.h5'
LAST_WEIGHTS = 'last.weights.h5'
HISTORY_FILE = 'history.csv'
PLOT_FILE = 'plot.png'
METRICS_FILE = 'metrics.json'
COMMAND_FILE = 'command.txt'
