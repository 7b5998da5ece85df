"""``fvt-train review``: the subcommand that serves the review app on this machine."""

from __future__ import annotations

import argparse
import sys

DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 5000
LOCAL_HOSTS = frozenset({'127.0.0.1', 'localhost', '::1'})


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f'expected a port number 0..65535; got {text!r}')
    return port


def _providers(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(',') if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f'expected provider names such as cuda,cpu; got {text!r}')
    return names


def add_review_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``fvt-train review``: browse a model's predictions on a prepared dataset."""
    parser = subparsers.add_parser(
        'review', help="serve a web page to compare a model's predictions with the labels",
        description='Start a local web app that segments images of a prepared dataset with '
                    'MODEL (through the same inference code as the ROS node) and shows the '
                    'photo, the true and predicted masks, an overlay and per-image scores.')
    parser.add_argument('--data', required=True, metavar='PREPARED_DIR',
                        help='a prepared dataset folder (the one holding manifest.json)')
    parser.add_argument('--model', required=True, metavar='MODEL.onnx',
                        help='an ONNX model following the model contract')
    parser.add_argument('--split', default='val', help='split the page opens on (default: val)')
    parser.add_argument('--providers', type=_providers, metavar='LIST',
                        help='ONNX Runtime providers to try in order, comma-separated, e.g. '
                             "cpu or cuda,cpu (default: the node's tensorrt,cuda,cpu)")
    parser.add_argument('--host', default=DEFAULT_HOST,
                        help='address to listen on (default: 127.0.0.1, this machine only)')
    parser.add_argument('--port', type=_port, default=DEFAULT_PORT,
                        help=f'port to listen on (default: {DEFAULT_PORT}; 0 picks a free one)')
    parser.set_defaults(func=run_review)
    return parser


def run_review(args: argparse.Namespace) -> int:
    """Load data and model, then serve until interrupted; setup problems print one line."""
    # Imported here so that `fvt-train --help` does not load Flask and ONNX Runtime.
    from werkzeug.serving import make_server

    from fvt_training.review.app import create_app

    app = create_app(args.data, args.model, split=args.split,
                     **({'providers': args.providers} if args.providers else {}))
    # A port in use or an unknown address: werkzeug explains it and exits with status 1.
    server = make_server(args.host, args.port, app, threaded=True)
    if args.host not in LOCAL_HOSTS:
        print(f'fvt-train review: warning: listening on {args.host}: anyone who can reach this '
              'address can browse the dataset', file=sys.stderr)
    host = f'[{args.host}]' if ':' in args.host else args.host
    print(f'fvt-train review: serving http://{host}:{server.server_port}/ (Ctrl+C to stop)',
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
