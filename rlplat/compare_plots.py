"""The pictures and TensorBoard scalars of `rlplat compare`: sample-efficiency curves (the
IQM of the periodic evals against env steps, with its bootstrap band, one line per
experiment and one panel per task) and the performance profile of the final scores
(the fraction of runs scoring above each score)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rlplat import stats

CURVE_RESAMPLES = 1_000  # per eval point: the band is a picture, not a claim


def curves(results: list, order: list[str]) -> dict[str, dict[str, list[list[float]]]]:
    """Per task and experiment: [env steps, IQM, low, high] at every eval point all the
    experiment's runs of that task have."""
    out: dict[str, dict[str, list[list[float]]]] = {}
    for task in sorted({r.task for r in results}):
        out[task] = {}
        for arm in order:
            runs = [dict(r.curve) for r in results if r.arm == arm and r.task == task]
            steps = sorted(set.intersection(*(set(c) for c in runs))) if runs else []
            rows = []
            for step in steps:
                e = stats.bootstrap([np.array([c[step] for c in runs])],
                                    lambda x, axis=-1: stats.iqm(x, axis=axis),
                                    resamples=CURVE_RESAMPLES)  # fmt: skip
                low = e.value if e.low is None else e.low
                high = e.value if e.high is None else e.high
                rows.append([step, round(e.value, 3), round(low, 3), round(high, 3)])
            out[task][arm] = rows
    return out


def write_pictures(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = summary["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for arm, rows in summary["curves"][task].items():
            if rows:
                x, y, lo, hi = np.array(rows, np.float64).T
                ax.plot(x, y, marker="o", markersize=3, label=arm)
                ax.fill_between(x, lo, hi, alpha=0.25)
        ax.set(title=task, xlabel="env steps", ylabel="eval return (IQM over seeds)")
        ax.legend()
    fig.tight_layout()
    paths = [out_dir / "curves.png", out_dir / "profile.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    _profile(summary, paths[1], plt)
    return paths


def _profile(summary: dict[str, Any], path: Path, plt) -> None:
    scores = {arm: [np.asarray(t) for t in per_task] for arm, per_task in summary["scores"].items()}
    flat = np.concatenate([np.concatenate(s) for s in scores.values()])
    pad = 0.05 * (flat.max() - flat.min() or 1.0)  # every run is above the first score
    taus = np.linspace(flat.min() - pad, flat.max() + pad, 200)
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, per_task in scores.items():
        ax.step(taus, stats.performance_profile(per_task, taus), where="post", label=arm)
    ax.set(xlabel=summary["score"], ylabel="fraction of runs above",
           title="performance profile", ylim=(-0.02, 1.02))  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_tensorboard(summary: dict[str, Any], logdir: Path) -> Path:
    """One TensorBoard run per experiment: `compare/TASK/return_iqm` and its band's
    `_low` and `_high`, against env steps (no TensorFlow needed)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    for arm in summary["experiments"]:
        writer = EventFileWriter(str(logdir / arm))
        for task, per_arm in summary["curves"].items():
            tag = f"compare/{task.replace('/', '-')}/return_iqm"
            for step, value, low, high in per_arm.get(arm, []):
                values = [Summary.Value(tag=t, simple_value=v) for t, v in
                          ((tag, value), (f"{tag}_low", low), (f"{tag}_high", high))]  # fmt: skip
                writer.add_event(Event(step=int(step), summary=Summary(value=values)))
        writer.close()
    return logdir
