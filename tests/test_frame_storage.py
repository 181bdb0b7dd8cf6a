"""The frame storage (rlplat/experience/storage.py), in a replay, against synthetic frame
streams whose pixels encode (stream, episode, t): any frame from the wrong stream, episode
or step shows.
The expected n-step transitions come from the collectors' own `NStepAccumulator` run on
each stream's one-step rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from conftest import run_cli, tiny_config, user_env

from rlplat import config
from rlplat.agents.actors import ActorPolicy
from rlplat.config import EnvConfig
from rlplat.envs import EnvSpaces
from rlplat.errors import ConfigError, UserError
from rlplat.experience import factory as replay_mod
from rlplat.experience.collect import Collector
from rlplat.experience.data import Fragment, Transitions
from rlplat.experience.nstep import NStepAccumulator
from rlplat.experience.replay import LocalReplay
from rlplat.experience.sampler import PrioritizedSampler, UniformSampler
from rlplat.experience.storage import FrameStorage, TransitionStorage

K, SHAPE, GAMMA = 4, (5, 6), 0.9


class FakeStream:
    """One env's stacked observations; episode e lasts 3 + (e * 5 + stream) % 9 steps and
    ends terminated when e is even, truncated when odd. `pad`: the reset stack's older
    frames are repeats of the first frame (gymnasium's FrameStackObservation) or zeros."""

    def __init__(self, stream: int, pad: str):
        self.stream, self.pad = stream, pad
        self.episode, self.t = 0, 0
        self.count = 0  # steps so far: the action id
        self.obs = self._reset_stack()

    def frame(self, t: int) -> np.ndarray:
        f = np.full(SHAPE, 200, np.uint8)
        f[0, :4] = self.stream, self.episode % 256, t % 256, t // 256
        f[1:, :] = (self.stream * 31 + self.episode * 7 + t * 3) % 199
        return f

    def _reset_stack(self) -> np.ndarray:
        first = self.frame(0)
        older = first if self.pad == "repeat" else np.zeros_like(first)
        return np.stack([older] * (K - 1) + [first], axis=-1)

    def step(self) -> dict:
        length = 3 + (self.episode * 5 + self.stream) % 9
        self.t += 1
        next_obs = np.concatenate([self.obs[..., 1:], self.frame(self.t)[..., None]], -1)
        last = self.t == length
        row = dict(
            obs=self.obs, action=self.stream * 100_000 + self.count, reward=self.count % 7 - 3,
            next_obs=next_obs, discount=0.0 if last and self.episode % 2 == 0 else 1.0, last=last,
        )  # fmt: skip
        self.count += 1
        if last:
            self.episode, self.t = self.episode + 1, 0
            self.obs = self._reset_stack()
        else:
            self.obs = next_obs
        return row


def rollout(streams: list[FakeStream], steps: int) -> Transitions:
    """`steps` vector steps, rows ordered (step, stream) as collectors return them."""
    rows = [s.step() for _ in range(steps) for s in streams]
    return Transitions(
        obs=np.stack([r["obs"] for r in rows]).astype(np.float32),  # as collectors send it
        action=np.array([r["action"] for r in rows]),
        reward=np.array([r["reward"] for r in rows], np.float32),
        next_obs=np.stack([r["next_obs"] for r in rows]).astype(np.float32),
        discount=np.array([r["discount"] for r in rows], np.float32),
        last=np.array([r["last"] for r in rows]),
    )


class Expected:
    """The n-step transitions the collectors would send, keyed by their obs (the frames
    paint the stream, episode and step, so a wrong stack finds no entry)."""

    def __init__(self, num_streams: int, n: int):
        self.asm = [NStepAccumulator(n, GAMMA, 1) for _ in range(num_streams)]
        self.by_obs: dict[bytes, tuple] = {}

    def feed(self, t: Transitions, num_streams: int) -> int:
        emitted = 0
        for s in range(num_streams):
            out = self.asm[s].add(t.map(lambda a, s=s: a[s::num_streams]))
            if out is not None:
                emitted += len(out)
                for i in range(len(out)):
                    row = (out.action[i], out.reward[i], out.next_obs[i], out.discount[i])
                    self.by_obs[out.obs[i].astype(np.uint8).tobytes()] = row
        return emitted

    def check(self, batch: Transitions) -> None:
        assert batch.obs.dtype == np.uint8 and batch.next_obs.dtype == np.uint8
        got = batch.map(lambda x: x.reshape(-1, *x.shape[batch.reward.ndim :]))
        for i in range(len(got)):
            action, reward, next_obs, discount = self.by_obs[got.obs[i].tobytes()]
            assert got.action[i] == action
            np.testing.assert_array_equal(got.next_obs[i], next_obs)
            assert got.reward[i] == pytest.approx(reward, rel=1e-6)
            assert got.discount[i] == pytest.approx(discount, rel=1e-6)


def frame_replay(
    capacity: int, num_streams: int = 1, n_step: int = 1, gamma: float = 0.99, *,
    prioritized: bool = False, seed: int = 0, obs: tuple = (*SHAPE, K), **kw,
) -> LocalReplay:  # fmt: skip
    storage = FrameStorage(capacity, obs, num_streams=num_streams, n_step=n_step, gamma=gamma)
    if prioritized:
        return LocalReplay(storage, PrioritizedSampler(storage.capacity, seed, **kw))
    return LocalReplay(storage, UniformSampler(storage.capacity, seed, dense=False))


def add(replay: LocalReplay, t: Transitions) -> None:
    """Rows ordered (step, stream) over all the storage's streams: one collector's."""
    replay.add(Fragment(t, num_envs=replay.storage.num_streams))


def tree(replay: LocalReplay):
    return replay.sampler._tree


def drawable(replay: LocalReplay) -> np.ndarray:
    return np.flatnonzero(tree(replay).leaf(np.arange(replay.capacity)) > 0)


def drawn(replay: LocalReplay) -> Transitions:
    """Every drawable transition."""
    return replay.storage.rows(drawable(replay))


@pytest.mark.parametrize("pad", ["repeat", "zeros"])
@pytest.mark.parametrize("n", [1, 3])
def test_every_drawable_transition_is_what_the_env_emitted(pad, n):
    num_streams = 3
    streams = [FakeStream(s, pad) for s in range(num_streams)]
    replay = frame_replay(3 * 40, num_streams, n, GAMMA)
    expected = Expected(num_streams, n)
    emitted = expected.feed(t := rollout(streams, 12), num_streams)
    add(replay, t)
    # Before any wrap every complete window is drawable, but one step later than the
    # collector emits it: the replay needs the frame that the next step stores.
    assert emitted - num_streams <= len(replay) <= emitted
    for _ in range(8):  # each ring (40 slots) wraps several times
        t = rollout(streams, 17)
        expected.feed(t, num_streams)
        add(replay, t)
        idx = drawable(replay)
        assert len(idx) == len(replay) > 40  # most slots still hold drawable steps
        expected.check(replay.storage.rows(idx))
        s = replay.sample(8, num_batches=2)
        assert s.batch.obs.shape == (2, 8, *SHAPE, K) and s.weights is None
        expected.check(s.batch)


def test_streams_added_separately_and_a_restarted_stream():
    """Streams added separately (two collectors' fragments, one env each); a stream
    that jumps mid-episode (collector restart, resume) ends its episode truncated,
    bootstrapping from the last next observation it sent."""
    n = 3
    replay = frame_replay(2 * 50, 2, n, GAMMA)
    a, b = FakeStream(0, "repeat"), FakeStream(1, "zeros")
    ta, tb = rollout([a], 5), rollout([b], 5)
    replay.add(Fragment(tb, actor=1))
    replay.add(Fragment(ta, actor=0))
    a.episode, a.t = 50, 0  # a restarted env: a new episode
    a.obs = a._reset_stack()
    ta2 = rollout([a], 4)
    replay.add(Fragment(ta2, actor=0))
    # What the collectors would have sent had stream 0 ended with truncation after ta.
    cut = Transitions.concat([ta, ta2])
    cut.last[4] = True
    expected = Expected(1, n)
    expected.feed(cut, 1)
    batch = drawn(replay)
    first = batch.action < 100_000
    expected.check(batch.map(lambda x: x[first]))
    # Stream 0: episode 0 (3 steps), the cut one (2), and the restarted one's first window.
    np.testing.assert_array_equal(np.sort(batch.action[first]), np.arange(6))
    ones = Expected(1, n)
    ones.feed(tb, 1)
    ones.check(batch.map(lambda x: x[~first]))  # stream 1: its 4-step episode
    np.testing.assert_array_equal(np.sort(batch.action[~first]), 100_000 + np.arange(4))


def test_prioritized_sampling_and_updates():
    streams = [FakeStream(s, "repeat") for s in range(2)]
    replay = frame_replay(
        2 * 60, 2, 3, GAMMA, prioritized=True, alpha=1.0, priority_epsilon=0.0, seed=3
    )
    add(replay, rollout(streams, 20))
    idx = drawable(replay)
    assert np.all(tree(replay).leaf(idx) == 1.0)  # new steps: the max priority
    favourite = idx[:1]
    td = np.full(len(idx), 0.01)
    td[0] = 100.0
    replay.update_priorities(idx, td)
    s = replay.sample(64)
    assert np.mean(s.indices == favourite[0]) > 0.8
    w = (s.priorities / 0.01) ** -replay.sampler.is_weights.beta  # (N P)^-b / (N P_min)^-b
    np.testing.assert_allclose(s.weights, w, rtol=1e-5)
    add(replay, rollout(streams, 1))  # new steps come in at the max priority seen: 100
    assert tree(replay).leaf(drawable(replay)).max() == pytest.approx(100.0)
    assert replay.anneal(1.0) == {"replay/beta": pytest.approx(1.0)}


def test_priority_updates_skip_overwritten_steps():
    """A step overwritten between its sample and its update stays undrawable."""
    replay = frame_replay(40, prioritized=True)
    stream = FakeStream(0, "repeat")
    add(replay, rollout([stream], 10))
    old = drawable(replay)
    add(replay, rollout([stream], 30))  # the ring wrapped over the old steps' slots
    gone = old[tree(replay).leaf(old) == 0]
    assert len(gone) > 0
    replay.update_priorities(gone, np.ones(len(gone)))
    assert np.all(tree(replay).leaf(gone) == 0)


def test_checkpoint_round_trip(tmp_path):
    streams = [FakeStream(s, "repeat") for s in range(2)]
    make = lambda: frame_replay(2 * 30, 2, 3, GAMMA, prioritized=True, seed=5)  # noqa: E731
    replay = make()
    add(replay, rollout(streams, 40))  # wrapped, with an episode open in each stream
    replay.update_priorities(drawable(replay)[:5], np.arange(5.0))
    replay.save(tmp_path)
    restored = make()
    restored.load(tmp_path)
    more = rollout(streams, 7)
    for r in (replay, restored):
        add(r, more)  # the open episodes continue where they were
    a, b = replay.sample(16), restored.sample(16)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.batch.obs, b.batch.obs)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert len(replay) == len(restored)
    early = make()
    add(early, rollout([FakeStream(s, "repeat") for s in range(2)], 3))
    early.save(tmp_path)  # only the written slots go to disk
    with np.load(tmp_path / "replay.npz") as saved:
        slots = sum(len(saved[f"frames_{s}"]) for s in range(2))
    # Each stream: 3 pads and 3 steps; stream 0's 3-step episode also its final frame.
    assert slots == 2 * (K - 1 + 3) + 1 < early.capacity
    late = make()
    late.load(tmp_path)
    np.testing.assert_array_equal(late.sample(4).batch.obs, early.sample(4).batch.obs)
    other = frame_replay(2 * 31, 2)
    with pytest.raises(ValueError, match="replay.json"):
        other.load(tmp_path)
    plain = LocalReplay(TransitionStorage(60, (*SHAPE, K)), UniformSampler(60, 0, dense=True))
    with pytest.raises(ValueError, match=r"holds a frames replay \(replay.frames: true\)"):
        plain.load(tmp_path)


def test_bytes_per_transition_at_100k():
    replay = frame_replay(100_000, 8, 3, prioritized=True, obs=(84, 84, 4))
    arrays = [v for v in vars(replay.storage).values() if isinstance(v, np.ndarray)]
    arrays += [tree(replay)._sum, tree(replay)._min]
    per_transition = sum(a.nbytes for a in arrays) / replay.capacity
    assert per_transition <= 7.5 * 1024, per_transition
    assert per_transition < 2 * 84 * 84 * 4 / 7  # 7x less than obs + next_obs per row


# ------------------------------------------------------------ selection and wiring


def image_spaces(shape=(*SHAPE, K), dtype=np.uint8) -> EnvSpaces:
    return EnvSpaces(gym.spaces.Box(0, 255, shape, dtype), gym.spaces.Discrete(3))


def test_config_selects_the_frame_replay_and_checks_its_key():
    cfg = config.parse(tiny_config(replay={"capacity": 200, "frames": True}))
    assert cfg.replay.n_step_at == "sample"
    kw = dict(n_step=3, gamma=GAMMA, num_streams=2)
    replay = replay_mod.make(cfg.replay, image_spaces(), 0, **kw)
    storage = replay.storage
    assert isinstance(storage, FrameStorage) and storage.n_step == 3 and storage.ring == 100
    plain = config.parse(tiny_config(replay={"capacity": 200}))
    assert plain.replay.n_step_at == "collector"
    plain_replay = replay_mod.make(plain.replay, image_spaces(), 0, **kw)
    assert isinstance(plain_replay.storage, TransitionStorage)
    with pytest.raises(UserError, match=r"^replay.frames: needs stacked uint8"):
        replay_mod.make(cfg.replay, image_spaces((4,), np.float32), 0, **kw)
    with pytest.raises(ConfigError, match="replay.frames"):
        config.parse(tiny_config(replay={"frames": True, "shards": 2}))
    with pytest.raises(ConfigError, match="replay.initial_priority"):
        config.parse(tiny_config(replay={"frames": True, "initial_priority": "td"}))


def test_collected_fragments_go_to_their_streams():
    """Two collectors of two envs each: fragment rows land in stream actor * 2 + env."""
    replay = frame_replay(4 * 30, 4)
    envs_ = [[FakeStream(10 * actor + e, "repeat") for e in range(2)] for actor in range(2)]
    for _ in range(3):
        for actor in (1, 0):
            t = rollout(envs_[actor], 4)
            replay.add(Fragment(t, [], len(t), num_envs=2, actor=actor))
    batch = drawn(replay)
    stream_of_row = drawable(replay) // replay.storage.ring
    emitted_by = batch.obs[:, 0, 0, -1]  # the FakeStream id painted into each frame
    assert set(emitted_by) == {0, 1, 10, 11}
    np.testing.assert_array_equal((emitted_by // 10) * 2 + emitted_by % 10, stream_of_row)
    with pytest.raises(ValueError, match=r"stream ids must be in \[0, 4\)"):
        replay.add(Fragment(rollout(envs_[0], 1), num_envs=2, actor=2))


class PixelWalk(gym.Env):
    """Frames painting (episode, t, position): action 1 steps right, 0 left; reaching 4
    terminates; `max_episode_steps` truncates."""

    observation_space = gym.spaces.Box(0, 255, SHAPE, np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.episode, self.who = -1, 0

    def _frame(self) -> np.ndarray:
        f = np.full(SHAPE, 9, np.uint8)
        f[0, :4] = self.who, self.episode % 256, self.t, self.pos
        return f

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.who = self.who if seed is None else seed % 256  # a collector seeds env i with i
        self.episode, self.t, self.pos = self.episode + 1, 0, 0
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        return self._frame(), float(self.pos), self.pos >= 4, False, {}


class StackedPixelWalk(gym.Wrapper):
    """gymnasium's FrameStackObservation (reset padding: repeats of the first frame), moved
    to the platform's channels-last [H, W, K]."""

    def __init__(self):
        stacked = gym.wrappers.FrameStackObservation(PixelWalk(), K)
        space = gym.spaces.Box(0, 255, (*SHAPE, K), np.uint8)
        super().__init__(
            gym.wrappers.TransformObservation(stacked, lambda o: np.moveaxis(o, 0, -1), space)
        )


class RandomActions(ActorPolicy):
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        pass

    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        return (self.rng.random(len(observations)) < 0.7).astype(np.int64)


def test_a_real_collector_through_gymnasium_frame_stacking():
    """The collector's one-step rows (same-step autoreset, final observations, truncation)
    from gymnasium's FrameStackObservation come back as the n-step transitions the
    collector would have assembled itself."""
    env = EnvConfig(id="test_frame_storage:StackedPixelWalk", max_episode_steps=6)
    n, num_envs = 3, 2
    collector = Collector(env, num_envs, seed=0, policy=RandomActions(0))
    replay = frame_replay(num_envs * 60, num_envs, n, GAMMA)
    expected = Expected(num_envs, n)
    ends = []
    for _ in range(6):
        fragment = collector.collect(10)
        t = fragment.transitions
        ends.append((t.last & (t.discount == 0), t.last & (t.discount == 1)))
        expected.feed(t, num_envs)
        replay.add(fragment)
        expected.check(drawn(replay))
    assert len(replay) >= 40  # the rings wrapped (60 rows each): short episodes, 4 slots more
    terminated, truncated = np.sum(ends, axis=(0, 2))
    assert terminated > 0 and truncated > 0


@pytest.mark.slow
def test_a_dqn_run_on_frames_trains_checkpoints_and_resumes(tmp_path):
    """`replay.frames: true` through the CLI: collectors send one-step rows, the replay's
    checkpoint holds its rings, and a resume carries on from it."""
    (tmp_path / "pixwalk.py").write_text(
        "from test_frame_storage import StackedPixelWalk as Env  # noqa: F401\n"
    )
    cfg = tiny_config(
        env={"id": "pixwalk:Env", "max_episode_steps": 6},
        agent={"type": "dqn", "n_step": 3, "network": {"hidden": [8]}, "jit_compile": False},
        replay={"capacity": 400, "frames": True, "type": "prioritized"},
        collect={"envs_per_actor": 2},
        train={"env_steps": 300, "batch_size": 8, "learning_starts": 100, "train_every": 50},
        eval={"every_env_steps": 300, "episodes": 1, "final_episodes": 20},
        checkpoint={"every_env_steps": 300},
        export={"when": "never"},
    )
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(cfg))
    env = {
        **user_env(),
        "PYTHONPATH": f"{Path(__file__).parent}:{os.environ.get('PYTHONPATH', '')}",
    }
    out = run_cli("train", "x.yaml", "--run-dir", "run", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "ckpt-000000000300"
    assert json.loads((ckpt / "replay.json").read_text())["kind"] == "frames"
    with np.load(ckpt / "replay.npz") as saved:
        assert saved["frames_0"].dtype == np.uint8 and len(saved["frames_1"]) > 0
    out = run_cli("train", "--resume", "run", "--set", "train.env_steps=400", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "checkpoints" / "ckpt-000000000400" / "replay.npz").exists()


class RandomAtari(ActorPolicy):
    def __init__(self):
        self.rng = np.random.default_rng(0)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        pass

    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        return self.rng.integers(0, 4, len(observations))


def digest(*fields: np.ndarray) -> bytes:
    """One transition's obs, action, reward, next_obs, discount as bytes (obs as uint8)."""
    dtypes = (np.uint8, np.int64, np.float32, np.uint8, np.float32)
    return b"|".join(np.asarray(f, d).tobytes() for f, d in zip(fields, dtypes, strict=True))


@pytest.mark.skipif("atari" not in EnvConfig.model_fields, reason="needs env.atari (envs/)")
@pytest.mark.parametrize("backend", ["python", "vector"])
def test_real_atari_frames_come_back_as_the_collector_would_assemble_them(backend):
    """Breakout through both env.atari backends (life-loss terminals that keep the frame
    stack, zero-padded first stacks, time limits): after the rings wrap, every drawable
    transition is one the collector's NStepAccumulator would have sent."""
    n, num_envs = 3, 2
    env = EnvConfig(id="ALE/Breakout-v5", max_episode_steps=150, atari={"backend": backend})
    collector = Collector(env, num_envs, seed=0, policy=RandomAtari())
    replay = frame_replay(num_envs * 400, num_envs, n, obs=(84, 84, 4))
    assemblers = [NStepAccumulator(n, 0.99, 1) for _ in range(num_envs)]
    sent: set[bytes] = set()
    ends = np.zeros(2, int)  # terminated, truncated
    for _ in range(12):
        fragment = collector.collect(50)
        t = fragment.transitions
        ends += (t.last & (t.discount == 0)).sum(), (t.last & (t.discount == 1)).sum()
        for s, asm in enumerate(assemblers):
            if (out := asm.add(t.map(lambda a, s=s: a[s::num_envs]))) is not None:
                fields = (out.obs, out.action, out.reward, out.next_obs, out.discount)
                rows = zip(*fields, strict=True)
                sent.update(digest(*row) for row in rows)
        replay.add(fragment)
        b = drawn(replay)
        rows = zip(b.obs, b.action, b.reward, b.next_obs, b.discount, strict=True)
        assert all(digest(*row) in sent for row in rows)
    assert ends.min() > 0 and len(replay) > 500
