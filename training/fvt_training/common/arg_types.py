"""Argument types shared by the ``fvt-train`` subcommands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """Parse a command-line integer >= 1 (argparse ``type``)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer; got {text}')
    return value


def non_negative_int(text: str) -> int:
    """Parse a command-line integer >= 0 (argparse ``type``)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0; got {text}')
    return value
