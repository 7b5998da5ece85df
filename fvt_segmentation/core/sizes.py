"""Image sizes written ``WxH`` (width by height), as both packages' command lines take them."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
import re

_SIZE = re.compile(r'\s*(\d+)\s*[xX]\s*(\d+)\s*')


class SizeError(argparse.ArgumentTypeError):
    """A size that is not ``WxH`` with positive integers; usable as an argparse ``type``."""


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``2048x1024``) into ``(width, height)``, both positive."""
    match = _SIZE.fullmatch(text)
    if not match or 0 in (int(match[1]), int(match[2])):
        raise SizeError('expects WxH with positive integers (WIDTHxHEIGHT), e.g. 512x256 or '
                        f'512x256,256x128; got {text!r}')
    return int(match[1]), int(match[2])


def parse_sizes(values: Iterable[str]) -> list[tuple[int, int]]:
    """Parse ``WxH`` values, each possibly comma-separated, into unique sizes in order."""
    sizes: list[tuple[int, int]] = []
    for value in values:
        for item in value.split(','):
            size = parse_size(item)
            if size not in sizes:
                sizes.append(size)
    if not sizes:
        raise SizeError('expects at least one WxH, e.g. 512x256')
    return sizes


def format_size(width: int, height: int) -> str:
    """Return ``WxH``, the form :func:`parse_size` reads."""
    return f'{int(width)}x{int(height)}'
