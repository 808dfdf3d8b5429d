"""Mutated Avazu rows for tests that hold two validation paths to the same verdicts."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence


def mutated_lines(rng: random.Random, base_lines: Sequence[str], pool: Sequence[str], count: int,
                  min_changes: int = 1, max_changes: int = 3) -> Iterator[str]:
    """``count`` lines, each a base line with a few fields replaced by, or spliced with, pieces from ``pool``."""
    for _ in range(count):
        fields = rng.choice(base_lines).split(",")
        for _ in range(rng.randint(min_changes, max_changes)):
            i = rng.randrange(len(fields))
            if rng.random() < 0.5:
                fields[i] = rng.choice(pool)
            else:
                text = fields[i]
                j = rng.randrange(len(text) + 1)
                fields[i] = text[:j] + rng.choice(pool) + text[j + 1 :]
        yield ",".join(fields)
