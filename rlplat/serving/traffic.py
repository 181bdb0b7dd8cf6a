"""A/B traffic: which arm of a model's split answers a request.

Semantics (docs/how-to/ab-rollout.md):
- A model entry's `traffic` maps arms (labels or version numbers) to weights. Only requests
  that name neither a version nor a label are split; naming one bypasses the split.
- A request with a routing key (REST header `X-Rlplat-Route`, gRPC metadata
  `x-rlplat-route`) goes to the arm whose share of [0, 1) holds the key's point: the first
  8 bytes of the key's BLAKE2b digest as a fraction of 2**64, laid over the arms' cumulative
  weights in the config's order. The same key lands on the same arm for as long as the
  weights (and their order) stay; when a later arm grows, only keys move to it (a ramp moves
  stable keys to the canary, never between canary keys and others).
- Without a key every request draws its own point (split per request).
- An arm whose version is not loaded (being replaced, say) is answered by the latest loaded
  version; the answer's version header says which.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from dataclasses import dataclass

from rlplat.serving.config import ModelEntry

ROUTE_HEADER = b"x-rlplat-route"  # REST request header (HTTP names are case-insensitive)
ROUTE_METADATA = "x-rlplat-route"  # gRPC metadata key (lower case, as gRPC requires)
VERSION_HEADER = b"x-rlplat-version"  # REST answer: the version that answered
ARM_HEADER = b"x-rlplat-arm"  # REST answer: the arm of the split that answered


# Points of recent keys: an episode sends its key with every step. A dict emptied when full
# rather than an LRU: with a fresh key per request (every miss) functools.lru_cache's
# bookkeeping cost more than the hash itself (benchmarks/serve_ab.py measures the split).
# Only short keys are kept, so a client sending long fresh keys (a header may be 64 KB)
# cannot make it hold gigabytes: at most _POINTS_MAX keys of _POINTS_KEY_BYTES.
_POINTS: dict[bytes, float] = {}
_POINTS_MAX = 65536
_POINTS_KEY_BYTES = 128


def key_point(key: bytes) -> float:
    """A routing key's stable point in [0, 1): the same on every process and run (Python's
    hash() is salted per process, so it would not be)."""
    point = _POINTS.get(key)
    if point is None:
        digest = hashlib.blake2b(key, digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2**64
        if len(key) <= _POINTS_KEY_BYTES:
            if len(_POINTS) >= _POINTS_MAX:
                _POINTS.clear()
            _POINTS[key] = point
    return point


@dataclass(frozen=True)
class Routed:
    """What answered a request: the arm (None when the request bypassed the split) and the
    shadow version to mirror it to (None: no mirror)."""

    arm: str | None = None
    shadow_arm: str | None = None
    shadow_version: int | None = None
    arm_header: tuple[bytes, bytes] | None = None  # REST's answer header naming the arm


UNSPLIT = Routed()


@dataclass(frozen=True)
class Split:
    """One model's arms, their versions, and the arms' upper bounds in [0, 1]."""

    arms: tuple[str, ...]
    versions: tuple[int, ...]
    bounds: tuple[float, ...]
    shadow: str | None = None
    shadow_version: int | None = None
    # One Routed per arm, built once: a frozen dataclass per request is measurable.
    routes: tuple[Routed, ...] = ()

    @classmethod
    def of(cls, entry: ModelEntry) -> Split | None:
        """The entry's split, or None when it has no `traffic` (already validated)."""
        if entry.traffic is None:
            return None
        arms = tuple(entry.traffic)
        total = sum(entry.traffic.values())
        bounds = [w / total for w in itertools.accumulate(entry.traffic.values())]
        bounds[-1] = 1.0  # (rounding must not leave a sliver no arm owns)
        shadow = entry.shadow
        shadow_version = entry.arm_version(shadow) if shadow is not None else None
        return cls(
            arms=arms,
            versions=tuple(entry.arm_version(a) for a in arms),
            bounds=tuple(bounds),
            shadow=shadow,
            shadow_version=shadow_version,
            routes=tuple(Routed(a, shadow, shadow_version, (ARM_HEADER, a.encode())) for a in arms),
        )

    def pick(self, key: bytes | None, rng: random.Random | None = None) -> int:
        """The index of the arm for a request with routing `key` (None: a random draw)."""
        point = key_point(key) if key else (rng or random).random()
        # The first arm whose upper bound is above the point: a zero-weight arm's bound equals
        # its predecessor's, so it is never the first (and never picked).
        i = bisect.bisect_right(self.bounds, point)
        return min(i, len(self.arms) - 1)
