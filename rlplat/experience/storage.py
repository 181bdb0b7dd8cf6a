"""Storages: where a replay keeps what collectors sent, and how it reads transitions back.

`TransitionStorage` keeps whole (n-step) transitions in a ring, as collectors formed them.
`FrameStorage` keeps stacked pixel observations frame by frame and forms n-step
transitions when they are read. Neither decides what is drawn: each `write` tells the
replay which items became drawable or stopped being so, and a sampler
(rlplat/experience/sampler.py) does the drawing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rlplat.experience import nstep
from rlplat.experience.data import Fragment, Transitions


@dataclass
class Written:
    """Items a `write` changed: drawable where `drawable` (None: all of them)."""

    idx: np.ndarray
    drawable: np.ndarray | None = None
    td_errors: np.ndarray | None = None  # the collector's initial |TD|, one per item


class Storage(Protocol):
    """Where a replay's items live."""

    capacity: int
    dense: bool  # drawable items are always [0, len): a uniform draw needs no tree
    kind: str  # in replay.json: a checkpoint of one kind does not load into another

    def write(self, f: Fragment) -> Written: ...

    def rows(self, idx: np.ndarray) -> Transitions:
        """The transitions at items `idx` (any shape: arrays are [*idx.shape, ...])."""
        ...

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and metadata for a checkpoint (the arrays may be views)."""
        ...

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> None: ...

    def parts(self) -> dict[str, np.ndarray]:
        """The written items, by name: the sampler saves its state for these."""
        ...


class TransitionStorage:
    """A fixed-capacity FIFO of whole transitions (the newest `capacity`)."""

    _FIELDS = ("obs", "action", "reward", "next_obs", "discount")
    dense = True
    kind = "transitions"

    def __init__(
        self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...] = (),
        action_dtype: np.dtype = np.int64, obs_dtype: np.dtype = np.float32,
    ):  # fmt: skip
        self.capacity = capacity
        self._data = {
            "obs": np.zeros((capacity, *obs_shape), obs_dtype),
            "action": np.zeros((capacity, *action_shape), action_dtype),
            "reward": np.zeros(capacity, np.float32),
            "next_obs": np.zeros((capacity, *obs_shape), obs_dtype),
            "discount": np.zeros(capacity, np.float32),
        }
        self._pos = 0
        self._size = 0

    def write(self, f: Fragment) -> Written:
        t, td = f.transitions, f.priorities
        n = len(t)
        if n > self.capacity:  # keep only the newest `capacity`
            t = Transitions(*(getattr(t, name)[-self.capacity :] for name in self._FIELDS))
            n = self.capacity
        idx = (self._pos + np.arange(n)) % self.capacity
        for name in self._FIELDS:
            self._data[name][idx] = getattr(t, name)
        self._pos = int((self._pos + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)
        return Written(idx, None, None if td is None else np.asarray(td)[-n:])

    def rows(self, idx: np.ndarray) -> Transitions:
        return Transitions(*(self._data[name][idx] for name in self._FIELDS))

    def parts(self) -> dict[str, np.ndarray]:
        return {"": np.arange(self._size)}

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Only the filled part."""
        arrays = {name: self._data[name][: self._size] for name in self._FIELDS}
        return arrays, {"pos": self._pos, "size": self._size}

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        n = meta["size"]
        if n > self.capacity:
            raise ValueError(f"checkpoint replay holds {n} > capacity {self.capacity}")
        for name in self._FIELDS:
            self._data[name][:n] = arrays[name]
        self._pos, self._size = meta["pos"] % self.capacity, n


class FrameStorage:
    """Stacked pixel observations [H, W, K] uint8, each frame stored once.

    Consecutive observations of one episode share K - 1 frames, so storing obs and
    next_obs per transition (as `TransitionStorage` does) costs 2 K frames where one is
    new. Here every env stream writes one slot per step into its own ring (frames of two
    streams never meet in a stack): the step's newest frame, its action, reward and end
    flags. Stacks are read back as the K slots ending at a step, and n-step returns and
    next observations are formed when a transition is read (as in Dopamine's circular
    replay buffer), so collectors send one-step rows with `last` flags.

    Layout of one episode in a stream's ring:
        [pad_1 .. pad_{K-1}] [step_0 .. step_{L-1}] [final]
    the pads are the first observation's older frames as the env emitted them (repeats of
    the reset frame for gymnasium's FrameStackObservation, zeros for others: whatever
    came), and `final` is the last step's next observation's newest frame (a truncated
    episode bootstraps from it). So a stack never reaches into another episode and a read
    obs equals the emitted one exactly, whatever the env pads with; the price is K slots
    per episode. A step is drawable once its n-step window is complete and until a write
    overwrites it or a frame of its stack; pads, finals and the slots just ahead of each
    write head are not.
    """

    _SLOT_ARRAYS = ("_frames", "_action", "_reward", "_terminated", "_last")
    _STREAM_ARRAYS = ("_head", "_filled", "_open", "_held")
    dense = False
    kind = "frames"

    def __init__(
        self, capacity: int, obs_shape: tuple[int, int, int], action_shape: tuple[int, ...] = (),
        action_dtype: np.dtype = np.int64, *, num_streams: int = 1, n_step: int = 1,
        gamma: float = 0.99,
    ):  # fmt: skip
        if len(obs_shape) != 3:
            raise ValueError(f"frame replay needs [H, W, K] observations, not {obs_shape}")
        *self.frame_shape, self.stack = obs_shape
        self.num_streams, self.n_step, self.gamma = num_streams, n_step, gamma
        self.ring = capacity // num_streams
        if self.ring < 2 * self.stack + n_step + 2:
            raise ValueError(
                f"replay.capacity {capacity} is too small for {num_streams} streams "
                f"(each needs more than {2 * self.stack + n_step + 1} slots)"
            )
        self.capacity = slots = self.ring * num_streams
        self._frames = np.zeros((slots, *self.frame_shape), np.uint8)
        self._action = np.zeros((slots, *action_shape), action_dtype)
        self._reward = np.zeros(slots, np.float32)
        self._terminated = np.zeros(slots, bool)
        self._last = np.zeros(slots, bool)  # the episode ends after this step
        self._head = np.zeros(num_streams, np.int64)  # next slot to write, per ring
        self._filled = np.zeros(num_streams, np.int64)  # slots written, up to the ring
        self._open = np.zeros(num_streams, bool)  # an episode is in progress
        self._held = np.zeros((num_streams, *obs_shape), np.uint8)  # its last next_obs
        self._pending: list[deque[int]] = [deque() for _ in range(num_streams)]
        self._changes: dict[int, bool] = {}  # slot -> drawable, gathered per write

    # ------------------------------------------------------------------- writing
    def write(self, f: Fragment) -> Written:
        """A collector's one-step rows (`discount` 0 where terminated, `last` at every
        episode end), ordered (step, env); env i of collector `f.actor` is stream
        `actor * num_envs + i`. Collectors' initial priorities do not apply: a step's
        n-step window is only known here."""
        t = f.transitions
        if t.last is None:
            raise ValueError("the frame replay needs `last` flags on the transitions")
        streams = f.actor * f.num_envs + np.arange(len(t)) % f.num_envs
        if len(t) and (streams.min() < 0 or streams.max() >= self.num_streams):
            raise ValueError(f"stream ids must be in [0, {self.num_streams})")
        obs = np.asarray(t.obs).astype(np.uint8, copy=False)
        next_obs = np.asarray(t.next_obs).astype(np.uint8, copy=False)
        self._changes = {}
        for i, s in enumerate(streams.tolist()):
            self._add_row(s, obs[i], next_obs[i], t, i)
        idx = np.fromiter(self._changes, np.int64, len(self._changes))
        drawable = np.fromiter(self._changes.values(), bool, len(self._changes))
        return Written(idx, drawable)

    def _add_row(self, s: int, obs: np.ndarray, next_obs: np.ndarray, t: Transitions, i: int):
        if self._open[s] and not np.array_equal(obs, self._held[s]):
            self._close(s)  # the stream jumped (a collector restarted): end it truncated
        if not self._open[s]:
            for k in range(self.stack - 1):  # the first observation's older frames
                self._write(s, obs[..., k])
        slot = self._write(s, obs[..., -1])
        self._action[slot] = t.action[i]
        self._reward[slot] = t.reward[i]
        self._terminated[slot] = t.discount[i] == 0.0
        pending = self._pending[s]
        pending.append(slot)
        if t.last[i]:
            self._last[slot] = True
            self._write(s, next_obs[..., -1])
            self._open[s] = False
            self._complete(pending, len(pending))
        else:
            self._open[s] = True
            self._held[s] = next_obs
            self._complete(pending, len(pending) - self.n_step)

    def _write(self, s: int, frame: np.ndarray) -> int:
        """Write `frame` at stream `s`'s head; the slot and the K - 1 after it (whose
        stacks reach back into it) stop being drawable."""
        local = int(self._head[s])
        slot = s * self.ring + local
        self._frames[slot] = frame
        self._last[slot] = self._terminated[slot] = False
        self._reward[slot] = 0.0
        for k in range(self.stack):
            self._changes[s * self.ring + (local + k) % self.ring] = False
        self._head[s] = (local + 1) % self.ring
        self._filled[s] = max(self._filled[s], local + 1)
        return slot

    def _complete(self, pending: deque[int], count: int) -> None:
        """The oldest `count` pending steps have their whole n-step window: drawable."""
        for _ in range(max(0, count)):
            self._changes[pending.popleft()] = True

    def _close(self, s: int) -> None:
        """End stream `s`'s open episode as truncated at its last step (bootstrapped from
        the held next observation)."""
        pending = self._pending[s]
        self._last[s * self.ring + (int(self._head[s]) - 1) % self.ring] = True
        self._write(s, self._held[s][..., -1])
        self._open[s] = False
        self._complete(pending, len(pending))

    # ------------------------------------------------------------------- reading
    def rows(self, idx: np.ndarray) -> Transitions:
        """The n-step transitions starting at steps `idx` (any shape): stacks gathered
        from their rings, returns summed up to the first episode end within n steps."""
        if idx.ndim != 1:
            shape = idx.shape
            return self.rows(idx.ravel()).map(lambda a: a.reshape(*shape, *a.shape[1:]))
        base, local = np.divmod(idx, self.ring)
        base *= self.ring
        slots = base + (local + np.arange(self.n_step)[:, None]) % self.ring  # [k, B]
        w = nstep.window(self._reward[slots], self._last[slots], self.gamma)
        end = base + (local + w.steps - 1) % self.ring
        return Transitions(
            obs=self._stacks(base, local),
            action=self._action[idx],
            reward=w.ret.astype(np.float32),
            next_obs=self._stacks(base, local + w.steps),
            discount=nstep.discount(self.gamma, w.steps, self._terminated[end]),
        )

    def _stacks(self, base: np.ndarray, local: np.ndarray) -> np.ndarray:
        """[B, H, W, K] uint8: the K slots ending at each `local` position of its ring."""
        back = np.arange(1 - self.stack, 1)
        slots = base[:, None] + (local[:, None] + back) % self.ring
        return np.moveaxis(self._frames[slots], 1, -1)

    # --------------------------------------------------------------- checkpoints
    def parts(self) -> dict[str, np.ndarray]:
        """Each ring's written slots (a ring fills from its start)."""
        return {
            f"_{s}": np.arange(s * self.ring, s * self.ring + int(n))
            for s, n in enumerate(self._filled)
        }

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The written slots of each ring (views: nothing is copied) and each stream's
        open episode, so adding resumes exactly."""
        arrays = {name[1:]: getattr(self, name) for name in self._STREAM_ARRAYS}
        for s, n in enumerate(self._filled):
            part = slice(s * self.ring, s * self.ring + int(n))
            for name in self._SLOT_ARRAYS:
                arrays[f"{name[1:]}_{s}"] = getattr(self, name)[part]
        meta = {
            "kind": self.kind, "capacity": self.capacity, "num_streams": self.num_streams,
            "pending": [list(p) for p in self._pending],
        }  # fmt: skip
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        shape = (meta.get("kind"), meta.get("capacity"), meta.get("num_streams"))
        if shape != (self.kind, self.capacity, self.num_streams):
            raise ValueError(
                f"holds a replay of (kind, capacity, streams) {shape}, this run's is "
                f"('frames', {self.capacity}, {self.num_streams})"
            )
        for name in self._STREAM_ARRAYS:
            getattr(self, name)[...] = arrays[name[1:]]
        for s, n in enumerate(self._filled):
            part = slice(s * self.ring, s * self.ring + int(n))
            for name in self._SLOT_ARRAYS:
                getattr(self, name)[part] = arrays[f"{name[1:]}_{s}"]
        self._pending = [deque(p) for p in meta["pending"]]
