"""Proportional prioritization's pieces, shared by the replay buffers (rlplat/replay.py,
rlplat/frame_replay.py): the sum/min trees and the importance-sampling weights."""

from __future__ import annotations

import numpy as np


class SumTree:
    """Sum and min over `capacity` non-negative priorities, as two implicit binary trees.

    A zero priority means "not drawable" (its min leaf is +inf), which the frame replay
    uses for slots that are not a whole transition. Updates and descents are vectorised:
    O(log N) numpy operations per call.
    """

    def __init__(self, capacity: int):
        self._depth = max(0, (capacity - 1).bit_length())
        self._leaves = 1 << self._depth  # power of two >= capacity
        self._sum = np.zeros(2 * self._leaves)
        self._min = np.full(2 * self._leaves, np.inf)

    @property
    def total(self) -> float:
        return float(self._sum[1])

    @property
    def low(self) -> float:
        """The smallest non-zero priority (inf when there is none)."""
        return float(self._min[1])

    def leaf(self, idx: np.ndarray) -> np.ndarray:
        return self._sum[idx + self._leaves]

    def clear(self) -> None:
        self._sum[:] = 0.0
        self._min[:] = np.inf

    def set(self, idx: np.ndarray, prios: np.ndarray) -> None:
        nodes = idx + self._leaves
        self._sum[nodes] = prios
        self._min[nodes] = np.where(prios > 0, prios, np.inf)
        # Parents are recomputed from their children, so a parent listed twice just gets
        # the same value twice: no np.unique needed (it made updates 2x slower).
        for _ in range(self._depth):
            nodes //= 2
            left, right = 2 * nodes, 2 * nodes + 1
            self._sum[nodes] = self._sum[left] + self._sum[right]
            self._min[nodes] = np.minimum(self._min[left], self._min[right])

    def find(self, targets: np.ndarray) -> np.ndarray:
        """Leaf index whose prefix-sum interval holds each target (vectorised descent)."""
        node = np.ones(len(targets), np.int64)
        targets = targets.copy()
        while node[0] < self._leaves:
            left = 2 * node
            left_sum = self._sum[left]
            go_right = targets > left_sum
            targets = np.where(go_right, targets - left_sum, targets)
            node = left + go_right
        return node - self._leaves


def anneal_beta(start: float, end: float, progress: float) -> float:
    """The importance-sampling exponent, linear from `start` to `end` over the run."""
    return start + (end - start) * min(1.0, progress)


def is_weights(prios: np.ndarray, total: float, low: float, beta: float) -> np.ndarray:
    """(N P(i))^-beta / (N P_min)^-beta with P = priority / total: at most 1."""
    return ((prios / total) / (low / total)) ** -beta
