"""What `rlplat eval` and `rlplat play` share, so their numbers compare line for line: run a
policy's episodes (with videos or a window if asked), print the returns table, and write
the record (eval.json, play.json) beside the videos in one output directory."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from rich.console import Console
from rich.table import Table

from rlplat import media
from rlplat.errors import UserError
from rlplat.evaluate import EvalHeartbeat, run_episodes
from rlplat.text import shown

if TYPE_CHECKING:
    from rlplat.policies import LoadedPolicy


class Answers(Protocol):
    """`rlplat play`'s record of who answered (rlplat.play.VersionsSeen, ArmRecorder)."""

    def episode_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]: ...

    def report(self, returns: np.ndarray, console: Console) -> dict[str, Any]: ...


@dataclass(frozen=True)
class EpisodesReport:
    record: Path  # eval.json or play.json
    videos: list[Path]


def episodes_report(
    policy: LoadedPolicy, episodes: int, seed: int, render: str, video_format: str,
    out: Path | None, record_name: str, extra: dict[str, Any], answers: Answers | None = None,
    say: Callable[[str], None] = print,
) -> EpisodesReport:  # fmt: skip
    """Run the episodes (`render`: "none", "video" files in `video_format`, or a "human"
    window), print the table on stdout, write `record_name` (with `extra`) under `out`
    (default: beside the policy, by time); `say` gets the heartbeat lines."""
    out = _out_dir(policy, out, record_name)
    videos = None
    kwargs: dict[str, Any] = {}
    if render == "video":
        videos = media.EpisodeVideos(
            out / "videos", video_format, media.env_fps(policy.env), score_strip=True
        )
        kwargs = dict(render_mode="rgb_array", on_frame=videos.frame, on_episode_end=videos.end)
    elif render == "human":
        kwargs = dict(render_mode="human")
    if answers is not None:  # play: which versions (and, --compare-arms, arms) answered
        kwargs = answers.episode_kwargs(kwargs)
    heartbeat = EvalHeartbeat(say, policy.name, episodes)
    try:
        result = run_episodes(
            policy.act, policy.env, episodes, seed, on_progress=heartbeat, **kwargs
        )
    finally:
        if videos is not None:
            videos.close()
    stats = result.to_dict()
    console = Console(soft_wrap=True)
    console.print(returns_table(f"{policy.name}: {episodes} episodes (seed {seed})", stats))
    console.print(f"policy: {policy.source}", highlight=False)
    if answers is not None:
        extra = {**extra, **answers.report(result.returns, console)}
    video_paths = list(videos.paths) if videos is not None else []
    record = {
        "source": policy.source,
        "name": policy.name,
        "env": policy.env.model_dump(mode="json"),
        "seed": seed,
        **extra,
        **stats,
        "videos": [str(p) for p in video_paths],
    }
    (out / record_name).write_text(json.dumps(record, indent=2))
    return EpisodesReport(out / record_name, video_paths)


def _out_dir(policy: LoadedPolicy, out: Path | None, record_name: str) -> Path:
    """`out`, or a new timestamped directory beside the policy, created."""
    if out is None:
        # a server's policy has no directory of its own: ./play/NAME (said in full at the end)
        base = policy.out_dir or Path(record_name.removesuffix(".json")).resolve() / policy.name
        out = base / time.strftime("%Y%m%d-%H%M%S")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create ({exc.strerror or exc})") from None
    return out


def returns_table(title: str, stats: dict[str, Any]) -> Table:
    """Mean ± std, median, min, max and mean length of an eval's returns (EvalResult.to_dict)."""
    table = Table(title=title)
    for col in ("return mean ± std", "median", "min", "max", "mean length"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{shown(stats['return_mean'])} ± {shown(stats['return_std'])}",
        shown(stats["return_median"]), shown(stats["return_min"]),
        shown(stats["return_max"]), shown(stats["length_mean"]),
    )  # fmt: skip
    return table
