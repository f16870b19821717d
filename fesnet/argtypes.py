"""argparse value types with ranges, so a nonsense option value is refused with one line (exit
code 2) instead of being accepted and silently doing nothing useful.

At the root of the package, below model/: every command line uses them, fesnet-train and
fesnet-eval (model/) as well as fesnet-spot (realtime/) and the runtime options every program
shares (``--stride``, ``--threads``: :func:`fesnet.model.runtime.add_runtime_arguments`). It
imports nothing of the project."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An int in ``[lo, hi]`` (no upper bound if ``hi`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {bound}")
        return value

    parse.__name__ = "int"
    return parse


def float_range(
    lo: float, hi: float | None = None, lo_open: bool = False
) -> Callable[[str], float]:
    """A finite float >= ``lo`` (> ``lo`` if ``lo_open``) and <= ``hi``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = value <= lo if lo_open else value < lo
        if not math.isfinite(value) or too_low or (hi is not None and value > hi):
            bound = (
                (">" if lo_open else ">=") + f" {lo:g}" + ("" if hi is None else f" and <= {hi:g}")
            )
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bound}")
        return value

    parse.__name__ = "float"
    return parse

