"""rlplat eval / plot: exact statistics, videos that decode, TensorBoard animations."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from conftest import run_cli, tiny_config, user_env

from rlplat.config import EnvConfig
from rlplat.evaluate import EVAL_SEED_OFFSET, run_episodes
from rlplat.media import EpisodeVideos


class Countdown(gym.Env):
    """A scripted env: the reset seed fixes the episode (length s % 4 + 1, reward s % 3 + 1
    per step), whatever the actions; frames are 16x16 grey images of the step count."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._left = self._reward = self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        s = int(seed or 0)
        self._left, self._reward, self._t = s % 4 + 1, float(s % 3 + 1), 0
        return np.array([self._left], np.float32), {}

    def step(self, action):
        self._left -= 1
        self._t += 1
        return np.array([self._left], np.float32), self._reward, self._left == 0, False, {}

    def render(self):
        return np.full((16, 16, 3), 20 * self._t, np.uint8)


def expected(seed: int, episodes: int) -> tuple[np.ndarray, np.ndarray]:
    s = EVAL_SEED_OFFSET + 1000 * seed + np.arange(episodes)
    lengths = s % 4 + 1
    return lengths * (s % 3 + 1.0), lengths


COUNTDOWN = EnvConfig(id="test_evaluate:Countdown")


def zeros(obs: np.ndarray) -> np.ndarray:
    return np.zeros(len(obs), np.int64)


def test_eval_statistics_are_exact_on_a_scripted_env():
    result = run_episodes(zeros, COUNTDOWN, episodes=7, seed=3)
    returns, lengths = expected(3, 7)
    np.testing.assert_array_equal(result.returns, returns)
    np.testing.assert_array_equal(result.lengths, lengths)
    stats = result.to_dict()
    assert stats["return_mean"] == pytest.approx(returns.mean())
    assert stats["return_std"] == pytest.approx(returns.std())
    assert stats["return_median"] == pytest.approx(np.median(returns))
    assert (stats["return_min"], stats["return_max"]) == (returns.min(), returns.max())
    assert stats["length_mean"] == pytest.approx(lengths.mean())


def test_a_long_eval_says_how_far_it_is_and_stops_when_asked(monkeypatch):
    from rlplat import text
    from rlplat.evaluate import EvalHeartbeat, EvalStopped

    lines: list[str] = []
    monkeypatch.setattr(text, "HEARTBEAT_S", 0.0)  # a line after every step
    beat = EvalHeartbeat(lines.append, "eval @ 1,000 env steps", 7)
    result = run_episodes(zeros, COUNTDOWN, episodes=7, seed=3, on_progress=beat)
    assert len(lines) == result.lengths.max()  # the 7 episodes step together
    assert lines[0].startswith("eval @ 1,000 env steps: ")
    assert f"7/7 episodes done, {result.lengths.sum():,} agent steps, " in lines[-1]
    asked = []
    with pytest.raises(EvalStopped):  # stop() is asked before each step
        run_episodes(zeros, COUNTDOWN, episodes=7, seed=3, stop=lambda: asked.append(1) or True)
    assert len(asked) == 1


def decode(path: Path) -> np.ndarray:
    """An MP4's frames as 16x16 RGB, decoded by the bundled ffmpeg with a generous timeout:
    imageio's reader gives ffmpeg 10 s to start, which a busy machine can exceed."""
    import imageio_ffmpeg

    out = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-vf", "scale=16:16",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, timeout=300, check=True,
    )  # fmt: skip
    return np.frombuffer(out.stdout, np.uint8).reshape(-1, 16, 16, 3)


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_videos_decode_with_one_frame_per_step_plus_the_first(tmp_path: Path, fmt: str):
    import imageio.v3 as iio

    videos = EpisodeVideos(tmp_path, fmt, fps=10)
    result = run_episodes(zeros, COUNTDOWN, 4, seed=0, render_mode="rgb_array",
                          on_frame=videos.frame, on_episode_end=videos.end)  # fmt: skip
    returns, lengths = expected(0, 4)
    np.testing.assert_array_equal(result.returns, returns)  # rendering does not change them
    assert [p.name for p in videos.paths] == [
        f"episode-{i:03d}-return-{r:.1f}.{fmt}" for i, r in enumerate(returns)
    ]
    for path, n in zip(videos.paths, lengths, strict=True):
        frames = decode(path) if fmt == "mp4" else iio.imread(path, index=None)
        assert len(frames) == n + 1, path
        # Frame k shows step k (grey level 20 k): the order survived encoding.
        np.testing.assert_allclose(frames[:, 8, 8, 0], 20 * np.arange(n + 1), atol=6)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_render_human_without_a_display_says_so(tmp_path: Path):
    env = {k: v for k, v in user_env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = run_cli("eval", str(tmp_path), "--render", "human", cwd=tmp_path, env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: --render human needs a display, and none is set (DISPLAY / WAYLAND_DISPLAY); "
        "use --render video to write episode videos instead"
    ]


def test_eval_of_something_that_is_not_a_run_or_model(tmp_path: Path):
    out = run_cli("eval", str(tmp_path), cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path}: neither a run directory (config.yaml) nor an exported model "
        "(models/NAME or models/NAME/VERSION with saved_model.pb)"
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny CartPole DQN run with TensorBoard animations on, trained through the CLI."""
    root = tmp_path_factory.mktemp("tiny")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(eval={"video": True})))
    out = run_cli("train", str(path), "--run-dir", str(root / "run"), cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    return root


@pytest.mark.slow
def test_eval_a_run_and_its_export_with_videos(tiny_run: Path):

    run_dir = tiny_run / "run"
    out = run_cli("eval", str(run_dir), "--episodes", "3", "--render", "video",
                  cwd=tiny_run, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "return mean ± std" in out.stdout
    lines = out.stdout.strip().splitlines()
    record = json.loads(Path(lines[-1]).read_text())
    assert Path(lines[-1]).parent.parent == run_dir / "eval"
    assert record["episodes"] == 3 and record["source"].startswith("checkpoint")
    assert len(record["videos"]) == 3 and lines[-4:-1] == record["videos"]
    for video, n in zip(record["videos"], record["lengths"], strict=True):
        assert len(decode(Path(video))) == n + 1
    # The exported SavedModel gives the same greedy episodes as the checkpoint.
    model = run_cli("eval", str(tiny_run / "models" / "tiny"), "--episodes", "3",
                    "--out", str(tiny_run / "model_eval"), cwd=tiny_run, timeout=300)  # fmt: skip
    assert model.returncode == 0, model.stderr
    from_model = json.loads((tiny_run / "model_eval" / "eval.json").read_text())
    assert from_model["source"].startswith("SavedModel")
    assert from_model["returns"] == record["returns"]


@pytest.mark.slow
def test_training_logs_eval_episodes_as_animations(tiny_run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_run / "run" / "tb"), size_guidance={"images": 0})
    events.Reload()
    images = events.Images("eval/episode")
    assert [i.step for i in images] == [600]  # the periodic eval (not the final one)
    assert images[0].encoded_image_string[:4] == b"GIF8"


@pytest.mark.slow
def test_plot_writes_a_png_from_runs(tiny_run: Path):
    from PIL import Image

    out = run_cli("plot", str(tiny_run / "run"), str(tiny_run / "run"), "--out",
                  str(tiny_run / "curves.png"), cwd=tiny_run, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    with Image.open(tiny_run / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 500
    bad = run_cli("plot", str(tiny_run), cwd=tiny_run, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"error: {tiny_run}: not a run directory (no evals.jsonl)"


@pytest.mark.parametrize(("ret", "name"), [(231.54, "231.5"), (-158.72, "minus158.7"),
                                           (0.93, "0.93"), (-0.01, "0.0")])  # fmt: skip
def test_a_video_is_named_by_its_return_without_a_double_dash(ret: float, name: str):
    from rlplat.media import _signed

    assert _signed(ret) == name
