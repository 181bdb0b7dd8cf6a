"""Writes replay checkpoints with the single-class buffers. Run at commit ac9907a:

    git worktree add /tmp/old ac9907a && PYTHONPATH=/tmp/old .venv/bin/python \
        tests/data/replay_ac9907a/make.py tests/data/replay_ac9907a
"""

import json
import sys
from pathlib import Path

import numpy as np

from rlplat.data import Transitions
from rlplat.frame_replay import FrameReplay
from rlplat.replay import PrioritizedReplay, UniformReplay

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
expected = {}


def rows(n, obs_shape, dtype=np.float32):
    obs = rng.integers(0, 255, (n, *obs_shape)).astype(dtype)
    return Transitions(obs, rng.integers(0, 3, n), rng.normal(size=n).astype(np.float32),
                       obs, np.ones(n, np.float32))  # fmt: skip


for name, replay in (
    ("uniform", UniformReplay(50, (3,), seed=1)),
    ("prioritized", PrioritizedReplay(50, (3,), seed=2)),
):
    replay.add(rows(70, (3,)))
    if name == "prioritized":
        replay.update_priorities(np.arange(50), rng.exponential(size=50))
        replay.anneal(0.3)
    (out / name).mkdir(parents=True, exist_ok=True)
    replay.save(out / name)
    s = replay.sample(8, 2)
    expected[name] = {"indices": s.indices.tolist(), "reward": s.batch.reward.tolist(),
                      "weights": None if s.weights is None else s.weights.tolist()}  # fmt: skip

# frames: 2 streams of 6x5x4 stacks, episodes of 7 steps
frames = FrameReplay(
    2 * 40, (6, 5, 4), num_streams=2, n_step=3, gamma=0.9, prioritized=True, seed=3
)
stacks = [np.zeros((6, 5, 4), np.uint8) for _ in range(2)]
step = [0, 0]
obs_l, next_l, last_l = [], [], []
for t in range(30):
    for s in range(2):
        frame = np.full((6, 5), (s * 50 + t) % 256, np.uint8)
        nxt = np.concatenate([stacks[s][..., 1:], frame[..., None]], -1)
        step[s] += 1
        end = step[s] == 7
        obs_l.append(stacks[s])
        next_l.append(nxt)
        last_l.append(end)
        stacks[s] = np.zeros((6, 5, 4), np.uint8) if end else nxt
        step[s] = 0 if end else step[s]
n = len(obs_l)
last = np.array(last_l)
tr = Transitions(np.stack(obs_l), rng.integers(0, 3, n), rng.normal(size=n).astype(np.float32),
                 np.stack(next_l), np.where(last, 0.0, 1.0).astype(np.float32), last)  # fmt: skip
frames.add(tr)
drawable = np.flatnonzero(frames._tree.leaf(np.arange(frames.capacity)) > 0)
frames.update_priorities(drawable[:10], np.arange(10.0))
(out / "frames").mkdir(exist_ok=True)
frames.save(out / "frames")
s = frames.sample(8)
expected["frames"] = {
    "indices": s.indices.tolist(), "reward": s.batch.reward.tolist(),
    "weights": s.weights.tolist(), "obs_sum": int(s.batch.obs.astype(np.int64).sum()),
    "discount": s.batch.discount.tolist(),
}  # fmt: skip
(out / "expected.json").write_text(json.dumps(expected))
