"""The key frames of the example: 8x8 grey images of hand-written digits, from the data set that
scikit-learn ships (``load_digits``, 1,797 images, pixel values 0 to 16; nothing is downloaded).

The first ``TRAINING`` images train the vision model; the traffic draws frames from all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

PIXELS = 64
MAX_PIXEL = 16
TRAINING = 1400


@dataclass(frozen=True)
class Digits:
    images: list[list[int]]  # each PIXELS values, row by row
    labels: list[int]


@cache
def digits() -> Digits:
    from sklearn.datasets import load_digits

    data = load_digits()
    return Digits([[int(v) for v in row] for row in data.data], [int(v) for v in data.target])


def valid_pixels(value: object) -> list[float] | None:
    """The pixels of a frame's data, or None when they are not PIXELS numbers from 0 to MAX_PIXEL."""
    if not isinstance(value, list) or len(value) != PIXELS:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= MAX_PIXEL for v in value):
        return None
    return [float(v) for v in value]
