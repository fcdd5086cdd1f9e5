"""Per-epoch means of a regularizer's values, for metrics.jsonl: `diffnas.loop.Mean`, the
one averager of the project (sums on the device, one host sync when the epoch's value is
read), under the name the regularizers use.
"""

from __future__ import annotations

from diffnas.loop import Mean as EpochMean

__all__ = ["EpochMean"]
