"""What a chart should draw: the stored samples of a range, grouped as the server groups them."""
from __future__ import annotations

import math


def bucketed(stored: list[tuple[float, float]], start: float, bucket_s: float) -> list[tuple[float, float]]:
    """(mean time, mean value) of each non-empty bucket of bucket_s seconds from start, in order.
    A node that runs late takes two samples close together: they share a bucket."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for t, v in stored:
        groups.setdefault(math.floor((t - start) / bucket_s), []).append((t, v))
    return [(sum(t for t, _ in g) / len(g), sum(v for _, v in g) / len(g)) for _, g in sorted(groups.items())]
