"""Samplers: the only code that draws replay indices, computes importance-sampling weights
and anneals their exponent. A storage (rlplat/experience/storage.py) says which of its
items hold data worth drawing; a sampler decides how likely each is.

`UniformSampler` draws every drawable item alike; `PrioritizedSampler` draws item i with
probability p_i^alpha / sum_k p_k^alpha (Schaul et al. 2016), over a `SumTree`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class SumTree:
    """Sum and min over `capacity` non-negative priorities, as two implicit binary trees.

    A zero priority means "not drawable" (its min leaf is +inf): the frame storage's pads
    and half-written stacks. Updates and descents are vectorised: O(log N) numpy
    operations per call.
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
        """The leaf whose prefix-sum interval holds each target (vectorised descent),
        never a zero leaf: where float round-off (or a target of exactly 0) would end in a
        subtree of zeros, that target descends again keeping to the non-zero side, so it
        ends at the nearest drawable leaf. The plain descent ends on a non-zero leaf only
        where the careful one would too, and is the faster: it runs for all, the careful
        one for the rare rest."""
        idx = self._descend(targets, careful=False)
        bad = self._sum[idx + self._leaves] <= 0
        if bad.any():
            idx[bad] = self._descend(targets[bad], careful=True)
        return idx

    def _descend(self, targets: np.ndarray, careful: bool) -> np.ndarray:
        node = np.ones(len(targets), np.int64)
        targets = targets.copy()
        for _ in range(self._depth):
            left = 2 * node
            left_sum = self._sum[left]
            go_right = targets > left_sum
            if careful:
                go_right = (go_right & (self._sum[left + 1] > 0)) | (left_sum <= 0)
            targets = np.where(go_right, targets - left_sum, targets)
            node = left + go_right
        return node - self._leaves


def stratified(tree: SumTree, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` draws over `tree`'s mass, one per equal slice of it, in random order."""
    targets = (np.arange(n) + rng.random(n)) * (tree.total / n)
    idx = tree.find(targets)
    return idx[rng.permutation(n)]  # strata are sorted by position: mix them


class ImportanceWeights:
    """(N P(i))^-beta / (N P_min)^-beta with P = priority / total: at most 1. The exponent
    beta goes linearly from `start` to `end` over the run (Schaul et al. 2016)."""

    def __init__(self, start: float, end: float):
        self.start, self.end = start, end
        self.beta = start

    def anneal(self, progress: float) -> dict[str, float]:
        self.beta = self.start + (self.end - self.start) * min(1.0, progress)
        return {"replay/beta": self.beta}

    def of(self, prios: np.ndarray, total: float, low: float) -> np.ndarray:
        return (((prios / total) / (low / total)) ** -self.beta).astype(np.float32)


class Sampler(Protocol):
    """How a replay picks items among those its storage holds."""

    def __len__(self) -> int:
        """Drawable items."""
        ...

    def store(
        self,
        idx: np.ndarray,
        drawable: np.ndarray | None = None,
        td_errors: np.ndarray | None = None,
    ) -> None:
        """Items `idx` changed: drawable where `drawable` (default: all), at their first
        priority (from `td_errors` if given, else the largest seen); the rest not."""

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """`n` items: (indices, their priorities or None)."""
        ...

    def weights(self, prios: np.ndarray | None) -> np.ndarray | None:
        """Importance-sampling weights of drawn priorities (None for uniform)."""
        ...

    def mass(self) -> tuple[float, float, int]:
        """(sampling mass, smallest priority, drawable items): for drawing across shards."""
        ...

    def update(self, idx: np.ndarray, td_errors: np.ndarray) -> None:
        """New |TD| errors of drawn items still drawable (a no-op for uniform)."""

    def anneal(self, progress: float) -> dict[str, float]:
        """Move schedules to `progress` in [0, 1]; returns the values to log."""
        ...

    def state(self, parts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays (keyed by `parts`' names: the storage's written items) and metadata."""
        ...

    def restore(self, arrays: dict[str, np.ndarray], meta: dict, parts: dict[str, np.ndarray]):
        """Read back what `state` gave."""


class UniformSampler:
    """Every drawable item alike, with replacement.

    `dense`: the storage's drawable items are always [0, len) (a ring of whole
    transitions), so a draw is one `integers` call and no tree is kept. Otherwise (the
    frame storage, whose pads and half-written stacks sit between drawable steps) a
    `SumTree` of ones marks what may be drawn.
    """

    def __init__(self, capacity: int, seed: int, dense: bool):
        self.rng = np.random.default_rng(seed)
        self._tree = None if dense else SumTree(capacity)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def store(
        self,
        idx: np.ndarray,
        drawable: np.ndarray | None = None,
        td_errors: np.ndarray | None = None,
    ) -> None:
        if self._tree is None:  # dense: a ring filled from 0, every written item drawable
            if len(idx):
                self._size = max(self._size, int(idx.max()) + 1)
            return
        self._size += _set_counting(self._tree, idx, _ones_where(drawable, len(idx), 1.0))

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self._tree is None:
            return self.rng.integers(0, self._size, size=n), None
        idx = stratified(self._tree, n, self.rng)
        return idx, self._tree.leaf(idx)

    def weights(self, prios: np.ndarray | None) -> None:
        return None

    def mass(self) -> tuple[float, float, int]:
        return float(self._size), 1.0, self._size

    def update(self, idx: np.ndarray, td_errors: np.ndarray) -> None:
        pass

    def anneal(self, progress: float) -> dict[str, float]:
        return {}

    def state(self, parts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {} if self._tree is None else _leaves(self._tree, parts)
        return arrays, {"size": self._size, "rng": self.rng.bit_generator.state}

    def restore(self, arrays: dict[str, np.ndarray], meta: dict, parts: dict[str, np.ndarray]):
        if self._tree is not None:
            _set_leaves(self._tree, arrays, parts)
        self._size = meta["size"]
        self.rng.bit_generator.state = meta["rng"]


class PrioritizedSampler:
    """Proportional prioritization (Schaul et al. 2016) on a sum-tree and a min-tree.

    Draws are stratified (one per equal slice of the total mass); new items get the
    largest priority seen so far unless given their |TD| (Ape-X's collectors), so each is
    replayed at least about once. Importance weights are divided by the largest possible
    weight, so they are <= 1.
    """

    def __init__(
        self, capacity: int, seed: int, *, alpha: float = 0.6, beta_start: float = 0.4,
        beta_end: float = 1.0, priority_epsilon: float = 1e-6,
    ):  # fmt: skip
        self.rng = np.random.default_rng(seed)
        self.alpha, self.priority_epsilon = alpha, priority_epsilon
        self.is_weights = ImportanceWeights(beta_start, beta_end)
        self._tree = SumTree(capacity)
        self._max_priority = 1.0  # in alpha space: what new items get
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _priority(self, td_errors: np.ndarray) -> np.ndarray:
        return (np.abs(np.asarray(td_errors)).ravel() + self.priority_epsilon) ** self.alpha

    def store(
        self,
        idx: np.ndarray,
        drawable: np.ndarray | None = None,
        td_errors: np.ndarray | None = None,
    ) -> None:
        if td_errors is None:
            prios = _ones_where(drawable, len(idx), self._max_priority)
        else:
            prios = self._priority(td_errors)
            if drawable is not None:
                prios = np.where(drawable, prios, 0.0)
            if len(prios):
                self._max_priority = max(self._max_priority, float(prios.max()))
        self._size += _set_counting(self._tree, idx, prios)

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = stratified(self._tree, n, self.rng)
        return idx, self._tree.leaf(idx)

    def weights(self, prios: np.ndarray | None) -> np.ndarray:
        return self.is_weights.of(prios, self._tree.total, self._tree.low)

    def mass(self) -> tuple[float, float, int]:
        return self._tree.total, self._tree.low, self._size

    def priorities(self, idx: np.ndarray) -> np.ndarray:
        """The current priorities (alpha space) of items `idx`; 0: not drawable."""
        return self._tree.leaf(idx)

    def update(self, idx: np.ndarray, td_errors: np.ndarray) -> None:
        """Items overwritten or made undrawable since the draw keep their state (setting a
        priority there would make a half-overwritten frame stack drawable)."""
        idx, prios = idx.ravel(), self._priority(td_errors)
        live = self._tree.leaf(idx) > 0
        if not live.all():  # (the common case, all live, skips two boolean copies)
            idx, prios = idx[live], prios[live]
        self._tree.set(idx, prios)
        if len(prios):
            self._max_priority = max(self._max_priority, float(prios.max()))

    def anneal(self, progress: float) -> dict[str, float]:
        return self.is_weights.anneal(progress)

    def state(self, parts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
        meta = {
            "size": self._size, "rng": self.rng.bit_generator.state,
            "max_priority": self._max_priority, "beta": self.is_weights.beta,
        }  # fmt: skip
        return _leaves(self._tree, parts), meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict, parts: dict[str, np.ndarray]):
        _set_leaves(self._tree, arrays, parts)
        self._size = meta["size"]
        self.rng.bit_generator.state = meta["rng"]
        self._max_priority = meta["max_priority"]
        self.is_weights.beta = meta["beta"]


def _ones_where(drawable: np.ndarray | None, n: int, value: float) -> np.ndarray:
    return np.full(n, value) if drawable is None else np.where(drawable, value, 0.0)


def _set_counting(tree: SumTree, idx: np.ndarray, prios: np.ndarray) -> int:
    """Set `prios` at `idx` (distinct); returns the change in drawable items."""
    change = int(np.count_nonzero(prios > 0) - np.count_nonzero(tree.leaf(idx) > 0))
    tree.set(idx, prios)
    return change


def _leaves(tree: SumTree, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Checkpoint arrays: `priorities{name}` for each part's items."""
    return {f"priorities{name}": tree.leaf(idx).copy() for name, idx in parts.items()}


def _set_leaves(tree: SumTree, arrays: dict[str, np.ndarray], parts: dict[str, np.ndarray]):
    tree.clear()
    for name, idx in parts.items():
        if len(idx):
            tree.set(idx, arrays[f"priorities{name}"])
