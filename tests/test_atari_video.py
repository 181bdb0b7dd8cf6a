"""Atari episode videos (issue 15): the full-colour game screen with the running score in a
strip below it, one frame per agent step plus the first, from the same episodes (seeds,
returns, lengths) as an evaluation without rendering."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rlplat.config import EnvConfig
from rlplat.evaluate import run_episodes
from rlplat.media import EpisodeVideos, with_score

# Long enough for the computer to score a point or two in Pong (~40 steps each).
PONG = EnvConfig(id="ALE/Pong-v5", atari={}, max_episode_steps=100)


def pixel_policy(obs: np.ndarray) -> np.ndarray:
    """Deterministic, and dependent on what it sees (so a replay of other frames differs)."""
    return (obs.reshape(len(obs), -1).sum(1, dtype=np.int64) // 7 % 6).astype(np.int64)


def decode(path: Path) -> np.ndarray:
    """An MP4's frames at their own size, decoded by the bundled ffmpeg."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])


def test_score_strip_reads_below_the_frame_and_changes_with_the_score():
    frame = np.random.default_rng(0).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    shown = with_score(frame, 12.0, 340)
    assert shown.shape[1:] == (160, 3) and shown.shape[0] > 210 and shown.shape[0] % 2 == 0
    np.testing.assert_array_equal(shown[:210], frame)  # the screen itself is untouched
    strip = shown[210:]
    assert 0.02 < (strip > 0).mean() < 0.5  # text on black: some pixels lit, most not
    assert not np.array_equal(with_score(frame, 13.0, 340)[210:], strip)
    assert not np.array_equal(with_score(frame, 12.0, 341)[210:], strip)


def test_atari_video_is_the_colour_screen_with_the_score_and_the_same_episodes(tmp_path):
    plain = run_episodes(pixel_policy, PONG, episodes=2, seed=0)
    videos = EpisodeVideos(tmp_path, "mp4", fps=15, score_strip=True)
    scores: dict[int, list[float]] = {0: [], 1: []}

    def on_frame(episode: int, frame: np.ndarray, score: float, step: int) -> None:
        assert frame.shape == (210, 160, 3)  # ALE's screen, not the 84x84 input
        scores[episode].append(score)
        videos.frame(episode, frame, score, step)

    filmed = run_episodes(pixel_policy, PONG, episodes=2, seed=0, render_mode="rgb_array",
                          on_frame=on_frame, on_episode_end=videos.end)  # fmt: skip
    videos.close()
    # Honest: the filmed episodes are the evaluated ones.
    np.testing.assert_array_equal(filmed.returns, plain.returns)
    np.testing.assert_array_equal(filmed.lengths, plain.lengths)
    assert filmed.returns.all()  # the strip had a score to show
    for episode, path in enumerate(videos.paths):
        frames = decode(path)
        assert len(frames) == filmed.lengths[episode] + 1
        assert frames.shape[1:] == with_score(np.zeros((210, 160, 3), np.uint8), 0, 0).shape
        screen = frames[:, :210].astype(np.int16)
        assert np.abs(screen[..., 0] - screen[..., 2]).mean() > 5  # colour, not grey
        assert scores[episode][-1] == filmed.returns[episode]
