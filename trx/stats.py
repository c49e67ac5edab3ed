"""Statistics over seeds, defined once for every table, figure and report.

`±` always means the sample standard deviation over seeds (n − 1 in the denominator);
intervals are written [lo, hi] and say their level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def mean_sd(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1) of the finite values; sd is None below two."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, sd
