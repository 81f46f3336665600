"""Endless streams over finite data sets."""

from __future__ import annotations

import numpy as np


class EpochOrder:
    """Maps a stream index to an item of an n-item set: every epoch a fresh seeded shuffle,
    so `order(i)` depends on (seed, i) alone and streams resume without state."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self._epoch, self._perm = n, seed, -1, None

    def __call__(self, index: int) -> int:
        epoch, pos = divmod(index, self.n)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return int(self._perm[pos])
