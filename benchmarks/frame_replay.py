"""The frame-sharing replay (rlplat/experience/storage.py) at Atari sizes; one JSON line.

    .venv/bin/python benchmarks/frame_replay.py [--capacity 100000]

Fills a prioritized replay with a 3-step frame storage of [84, 84, 4] uint8 observations from 8
interleaved synthetic env streams (episodes of 100-300 steps: Atari lives with
terminal-on-life-loss are of that order), then measures: bytes per stored transition
(every array's nbytes over the drawable transitions when full, and per slot), the same
arrays at 1M capacity, add throughput (one-step rows/s, as collectors send them),
sample(32) and sample(32) + update_priorities(32) per second, and a checkpoint's write
time and size on disk.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from replay_throughput import rate  # (this folder: scripts run from it)

from rlplat.experience.data import Fragment, Transitions
from rlplat.experience.replay import LocalReplay
from rlplat.experience.sampler import PrioritizedSampler
from rlplat.experience.storage import FrameStorage

OBS, STREAMS, STEPS = (84, 84, 4), 8, 64  # rows per add: STREAMS * STEPS


def frame_replay(capacity: int) -> LocalReplay:
    storage = FrameStorage(capacity, OBS, num_streams=STREAMS, n_step=3, gamma=0.99)
    return LocalReplay(storage, PrioritizedSampler(storage.capacity, seed=0))


def nbytes(replay: LocalReplay) -> int:
    arrays = [v for v in vars(replay.storage).values() if isinstance(v, np.ndarray)]
    tree = replay.sampler._tree
    return sum(a.nbytes for a in arrays) + tree._sum.nbytes + tree._min.nbytes


class Streams:
    """STREAMS envs emitting sliding stacks of random frames (a pool, to keep it cheap)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.pool = rng.integers(0, 256, (512, *OBS[:2]), np.uint8)
        self.t = np.zeros(STREAMS, np.int64)
        self.length = rng.integers(100, 301, STREAMS)
        self.start = rng.integers(0, 10_000, STREAMS)

    def stack(self, s: int, t: int) -> np.ndarray:
        ids = (self.start[s] + np.maximum(np.arange(t - 3, t + 1), 0)) % len(self.pool)
        return np.moveaxis(self.pool[ids], 0, -1)

    def rows(self) -> Transitions:
        obs, next_obs, last = [], [], []
        for _ in range(STEPS):
            for s in range(STREAMS):
                t = int(self.t[s])
                obs.append(self.stack(s, t))
                next_obs.append(self.stack(s, t + 1))
                end = t + 1 == self.length[s]
                last.append(end)
                self.t[s] = 0 if end else t + 1
                if end:
                    self.length[s] = self.rng.integers(100, 301)
                    self.start[s] = self.rng.integers(0, 10_000)
        n = len(obs)
        return Transitions(
            np.stack(obs), self.rng.integers(0, 6, n), self.rng.normal(size=n).astype(np.float32),
            np.stack(next_obs), np.where(np.array(last), 0.0, 1.0).astype(np.float32),
            np.array(last),
        )  # fmt: skip


def fill(replay: LocalReplay, streams: Streams) -> tuple[float, int]:
    """Add until every slot was written once more than capacity; (add seconds, rows)."""
    spent, rows = 0.0, 0
    while rows < replay.capacity * 1.05:
        t = streams.rows()  # made outside the timing: only the replay's work counts
        t0 = time.perf_counter()
        replay.add(Fragment(t, num_envs=STREAMS))
        spent += time.perf_counter() - t0
        rows += len(t)
    return spent, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--capacity", type=int, default=100_000)
    capacity = ap.parse_args().capacity
    rng = np.random.default_rng(0)
    replay = frame_replay(capacity)
    add_s, added = fill(replay, Streams(rng))
    size = nbytes(replay)
    big = frame_replay(1_000_000)
    sample_rate = rate(lambda: replay.sample(32))

    def sample_and_update() -> None:
        s = replay.sample(32)
        replay.update_priorities(s.indices, rng.random(s.indices.shape))

    pair_rate = rate(sample_and_update)
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        t0 = time.perf_counter()
        replay.save(Path(tmp))
        save_s = time.perf_counter() - t0
        disk = sum(f.stat().st_size for f in Path(tmp).iterdir())
        t0 = time.perf_counter()
        replay.load(Path(tmp))
        load_s = time.perf_counter() - t0
    naive = 2 * int(np.prod(OBS))  # obs + next_obs per transition in a plain buffer
    print(json.dumps({
        "capacity": replay.capacity, "obs": list(OBS), "streams": STREAMS, "n_step": 3,
        "drawable_transitions": len(replay),
        "bytes_per_transition": round(size / len(replay)),
        "bytes_per_slot": round(size / replay.capacity),
        "plain_buffer_bytes_per_transition": naive,
        "gb_at_1m_capacity": round(nbytes(big) / 1e9, 2),
        "add_rows_per_s": round(added / add_s),
        "sample32_per_s": round(sample_rate),
        "sample32_update_per_s": round(pair_rate),
        "checkpoint_write_s": round(save_s, 2), "checkpoint_load_s": round(load_s, 2),
        "checkpoint_mb": round(disk / 1e6, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
