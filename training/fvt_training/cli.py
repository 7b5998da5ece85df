"""``fvt-train``: one command with subcommands (prepare, config, train, and those added later).

Each subcommand comes from a registrar ``add_<name>_parser(subparsers)`` listed in
:data:`REGISTRARS` as ``'module:function'``. A registrar adds its parser and sets
``func=<callable(args) -> int | None>`` with ``set_defaults``. Registrar modules must not
import TensorFlow at module level (handlers import it when they run), so ``fvt-train --help``
stays fast. To add a subcommand, write its registrar and append it here.

Handlers raise the errors of :data:`fvt_training.common.user_errors.USER_ERRORS` for problems a
user can fix: :func:`main` prints their message as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import importlib
from pathlib import Path
import sys

from fvt_training.common.user_errors import user_errors
from fvt_training.runs.config import ConfigError, load_config, render_config

REGISTRARS = [
    'fvt_training.data.prepare:add_prepare_parser',
    'fvt_training.cli:add_config_parser',
    'fvt_training.cli:add_train_parser',
    'fvt_training.review.command:add_review_parser',
    'fvt_training.evaluation.evaluate:add_evaluate_parser',
    'fvt_training.evaluation.compare:add_compare_parser',
    'fvt_training.onnx.export:add_export_parser',
    'fvt_training.adopt.adopt:add_adopt_parser',
]

def add_config_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fvt-train config``: print a resolved, commented configuration."""
    parser = subparsers.add_parser(
        'config', help='print a configuration with every key commented (defaults if no file)',
        description='Validate CONFIG plus overrides and print the result as commented YAML; '
                    'without CONFIG, print the defaults (a starting point for a new file).')
    parser.add_argument('config', nargs='?', help='experiment YAML file')
    parser.add_argument('overrides', nargs='*', metavar='key=value',
                        help='overrides, e.g. train.epochs=3 or epochs=3')
    parser.set_defaults(func=_run_config)


def _split_config(args: argparse.Namespace) -> None:
    # argparse gives the optional CONFIG the first key=value when no file is named.
    if args.config and '=' in args.config and not Path(args.config).exists():
        args.overrides.insert(0, args.config)
        args.config = None


def _run_config(args: argparse.Namespace) -> int:
    _split_config(args)
    config = load_config(args.config, args.overrides, check_required=args.config is not None)
    sys.stdout.write(render_config(config, header='fvt-train experiment configuration'))
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fvt-train train``: train a configuration or resume a run."""
    parser = subparsers.add_parser(
        'train', help='train one experiment (or --resume an interrupted run)',
        description='Train the model CONFIG describes into runs/<name>/ (numbered if it '
                    'exists). key=value pairs override the file (dotted keys such as '
                    'model.backbone=resnet18, or a unique bare key such as epochs=3).')
    parser.add_argument('config', nargs='?', help='experiment YAML file')
    parser.add_argument('overrides', nargs='*', metavar='key=value', help='config overrides')
    parser.add_argument('--resume', metavar='RUN_DIR',
                        help='continue an interrupted run from its last finished epoch')
    parser.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    _split_config(args)
    epochs = None
    if args.resume:
        words = ([args.config] if args.config else []) + list(args.overrides)
        budget = [w.split('=', 1)[1] for w in words if w.split('=', 1)[0] in (
            'epochs', 'train.epochs') and '=' in w]
        if len(words) > 1 or len(budget) != len(words) or not all(b.isdigit() for b in budget):
            raise ConfigError('--resume RUN_DIR takes no CONFIG and no overrides but '
                              'train.epochs=N (a new epoch budget: larger to extend the run, '
                              'its current epoch to finish it now); a run resumes with the '
                              f'config.yaml it was started with; got {words}')
        epochs = int(budget[0]) if budget else None
    if not args.resume and not args.config:
        raise ConfigError('expected CONFIG (an experiment YAML file) or --resume RUN_DIR')
    config = None if args.resume else load_config(args.config, args.overrides)
    saved = Path(args.resume or '') / 'config.yaml'
    settings = config or (load_config(saved) if args.resume and saved.is_file() else None)
    if settings and settings['train']['strategy'] == 'multiworker':
        return _run_supervised(config, args.resume, epochs, settings)
    from fvt_training.runs import train
    from fvt_training.runs.cluster import TrainingStopped

    try:
        if args.resume:
            train.resume(args.resume, epochs=epochs)
        else:
            train.train(config)
    except TrainingStopped as stop:
        print(f'fvt-train train: {stop}' + (f'; {stop.hint}' if stop.hint else ''),
              file=sys.stderr)
        return stop.exit_code
    return 0


def _run_supervised(config: dict | None, resume: str | None, epochs: int | None,
                    settings: dict) -> int:
    # A multiworker process blocks in C++ (GIL held) while it waits for its peers: it runs
    # as a child of this TensorFlow-free process, which stays able to stop it.
    import os
    import tempfile

    from fvt_training.runs.cluster import read_tf_config, supervise

    task = read_tf_config(os.environ.get('TF_CONFIG'))
    work_dir = Path(tempfile.mkdtemp(prefix='fvt-worker-'))
    scratch = None
    if not task.chief:
        scratch = work_dir / 'scratch'
        scratch.mkdir()
    return supervise('fvt_training.runs.train:worker_main',
                     (config, resume, epochs, None if scratch is None else str(scratch)),
                     task, settings['train']['worker_timeout_s'], work_dir)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``fvt-train`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog='fvt-train',
        description='Prepare data, train, evaluate and export segmentation models for '
                    'fvt_segmentation.')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for entry in REGISTRARS:
        module, function = entry.split(':')
        getattr(importlib.import_module(module), function)(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fvt-train``; user errors print one line and return 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except user_errors() as err:
        print(f'fvt-train {args.command}: error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
