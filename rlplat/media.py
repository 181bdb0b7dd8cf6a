"""Episode videos (MP4 through imageio-ffmpeg, or GIF) and animated images for TensorBoard."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rlplat.config import EnvConfig
from rlplat.errors import UserError
from rlplat.text import shown


def require_display() -> None:
    """`--render human` needs a screen: say so in one line instead of a pygame error."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise UserError(
            "--render human needs a display, and none is set (DISPLAY / WAYLAND_DISPLAY); "
            "use --render video to write episode videos instead"
        )
    if os.environ.get("SDL_VIDEODRIVER") == "dummy":  # rlplat's headless default
        del os.environ["SDL_VIDEODRIVER"]


def env_fps(env_cfg: EnvConfig) -> int:
    """The env's own playback rate (metadata render_fps), 30 if it does not say."""
    from rlplat import envs

    env = envs.make(env_cfg)
    try:
        return int(env.metadata.get("render_fps") or 30)
    finally:
        env.close()


class EpisodeVideos:
    """One file per episode, written as frames arrive and named by episode and return
    once the episode is over: `episode-003-return-231.5.mp4`. With `score_strip`, each
    frame gets a strip below it with the episode's running score and step."""

    def __init__(
        self, out_dir: Path, fmt: str = "mp4", fps: int = 30, score_strip: bool = False
    ) -> None:
        self.out_dir, self.fmt, self.fps = out_dir, fmt, fps
        self.score_strip = score_strip
        self.paths: list[Path] = []
        self.frames: dict[int, int] = {}
        self._writers: dict[int, Any] = {}
        out_dir.mkdir(parents=True, exist_ok=True)

    def _tmp(self, episode: int) -> Path:
        return self.out_dir / f".episode-{episode:03d}.tmp.{self.fmt}"

    def frame(self, episode: int, frame: np.ndarray, score: float = 0.0, step: int = 0) -> None:
        """`score` and `step`: the episode's return and length so far (for the strip)."""
        if self.score_strip:
            frame = with_score(frame, score, step)
        writer = self._writers.get(episode)
        if writer is None:
            import imageio.v2 as imageio

            path = self._tmp(episode)
            if self.fmt == "mp4":  # H.264 wants even sizes; frames are padded, not scaled
                writer = imageio.get_writer(
                    path, fps=self.fps, codec="libx264", quality=7, macro_block_size=1,
                    ffmpeg_log_level="error",
                )  # fmt: skip
            else:
                writer = imageio.get_writer(path, mode="I", duration=1000 / self.fps, loop=0)
            self._writers[episode] = writer
        if self.fmt == "mp4":
            frame = _even(frame)
        writer.append_data(frame)
        self.frames[episode] = self.frames.get(episode, 0) + 1

    def end(self, episode: int, ret: float, length: int) -> None:
        writer = self._writers.pop(episode, None)
        if writer is None:
            return
        writer.close()
        final = self.out_dir / f"episode-{episode:03d}-return-{_signed(ret)}.{self.fmt}"
        self._tmp(episode).replace(final)
        self.paths.append(final)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def with_score(frame: np.ndarray, score: float, step: int) -> np.ndarray:
    """`frame` (h, w, 3) above a black strip reading `score 12  step 340` in white."""
    import cv2

    h, w = frame.shape[:2]
    text = f"score {score:.1f}".removesuffix(".0") + f"  step {step}"
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, min(w / 320, 1.0)
    while (size := cv2.getTextSize(text, font, scale, 1))[0][0] > w - 8 and scale > 0.3:
        scale *= 0.9  # shrink to the frame's width (ALE's screen is only 160 wide)
    (_, text_h), baseline = size
    strip_h = text_h + baseline + 6
    strip_h += strip_h % 2  # keeps an even frame even (H.264)
    strip = np.zeros((strip_h, w, 3), np.uint8)
    cv2.putText(strip, text, (4, 3 + text_h), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([frame[..., :3], strip])


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def gif_bytes(
    frames: list[np.ndarray], fps: int, scale: int = 2, every: int = 2
) -> tuple[bytes, int, int]:
    """An animated GIF of `frames` (every `every`-th, downscaled by `scale`): small enough
    to sit in a TensorBoard event file, which shows it in the Images tab. Returns the GIF
    and its height and width."""
    from PIL import Image

    picked = [f[::scale, ::scale] for f in frames[::every]]
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in picked]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:],
        duration=int(1000 * every / fps), loop=0,
    )  # fmt: skip
    height, width = picked[0].shape[:2]
    return buf.getvalue(), height, width


def _signed(ret: float) -> str:
    """A return in a file name: `231.5`, `minus158.7` (`return--158.7` reads as a typo)."""
    text = shown(ret)
    return f"minus{text[1:]}" if text.startswith("-") else text
