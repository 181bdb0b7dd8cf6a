"""What `rlplat compare` concludes from finished runs: per experiment the IQM, median and
mean of the final deterministic eval with stratified bootstrap intervals, the time to the
threshold, the probability that each experiment improves on the first, in plain words;
`compare.json` with every number, `curves.png`, `profile.png` and TensorBoard scalars.

Several tasks (Atari games) are compared on human-normalised scores (rlplat/atari_scores.py)
and aggregated as rliable does; the statistics are rlplat/stats.py's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlplat import stats
from rlplat.errors import UserError


@dataclass(frozen=True)
class RunResult:
    arm: str
    task: str
    seed: int
    run_dir: str
    final: float  # the final deterministic eval's mean return
    threshold: float | None
    steps_to_threshold: int | None  # None: never reached
    seconds_to_threshold: float | None
    env_steps: int
    wall_s: float
    curve: list[tuple[int, float]]  # (env steps, eval mean return)


def read_run(run_dir: Path, arm: str | None = None) -> RunResult:
    """A finished run's figures from its directory (arm: its experiment's name)."""
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
        lines = (run_dir / "evals.jsonl").read_text().splitlines()
        curve = [(int(e["env_steps"]), float(e["return_mean"])) for e in map(json.loads, lines)]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{run_dir}: not a finished run ({e.__class__.__name__})") from None
    first = summary.get("first_threshold") or {}
    return RunResult(
        arm or cfg["name"], cfg["env"]["id"], int(cfg["seed"]), str(run_dir),
        float(summary["final_eval"]["return_mean"]), cfg["eval"].get("threshold"),
        first.get("env_steps"), first.get("wall_s"), int(summary["env_steps"]),
        float(summary["wall_s"]), sorted(set(curve)),
    )  # fmt: skip


def _normalise(results: list[RunResult]) -> tuple[dict[str, tuple[float, float]], str | None]:
    """Per task (random, human) when there are several tasks; none for one task."""
    from rlplat.atari_scores import SOURCE, normaliser

    tasks = sorted({r.task for r in results})
    if len(tasks) == 1:
        return {}, None
    table = {t: normaliser(t) for t in tasks}
    missing = [t for t, n in table.items() if n is None]
    if missing:
        raise UserError(
            f"scores of {', '.join(missing)} cannot be put on one scale with the other tasks "
            "(rlplat knows random and human scores for Atari games only): compare them one "
            "task at a time"
        )
    return {t: n for t, n in table.items() if n is not None}, SOURCE


def _scores(results: list[RunResult], arm: str, norm: dict) -> list[np.ndarray]:
    tasks = sorted({r.task for r in results})
    out = []
    for task in tasks:
        x = np.array([r.final for r in results if r.arm == arm and r.task == task])
        if task in norm:
            random, human = norm[task]
            x = (x - random) / (human - random)
        out.append(x)
    return out


def _to_threshold(runs: list[RunResult]) -> dict[str, Any] | None:
    """Env steps and seconds to the first eval at the threshold; a run that never got
    there counts its whole budget (and is counted as such)."""
    if len({r.task for r in runs}) != 1 or runs[0].threshold is None:
        return None
    steps = [r.steps_to_threshold if r.steps_to_threshold is not None else r.env_steps
             for r in runs]  # fmt: skip
    secs = [r.seconds_to_threshold if r.seconds_to_threshold is not None else r.wall_s
            for r in runs]  # fmt: skip
    return {
        "threshold": runs[0].threshold,
        "reached": sum(r.steps_to_threshold is not None for r in runs),
        "env_steps_iqm": stats.estimate(steps).to_dict(),
        "seconds_iqm": stats.estimate(secs).to_dict(),
    }


def summarise(results: list[RunResult], order: list[str]) -> dict[str, Any]:
    """Every number of the comparison (the contents of compare.json)."""
    norm, source = _normalise(results)
    by_arm = {arm: _scores(results, arm, norm) for arm in order}
    first = by_arm[order[0]]
    per_arm, versus = {}, {}
    for arm, scores in by_arm.items():
        runs = [r for r in results if r.arm == arm]
        per_arm[arm] = {
            "runs": len(runs),
            **{k: stats.aggregate(scores, k).to_dict() for k in ("iqm", "median", "mean")},
            "to_threshold": _to_threshold(runs),
        }
        if arm != order[0]:
            one_task = len(scores) == 1
            versus[arm] = {
                "against": order[0],
                "probability_of_improvement": stats.improvement_probability(
                    first, scores
                ).to_dict(),
                "seeds_needed": stats.seeds_needed(first[0], scores[0]) if one_task else None,
            }
    return {
        "experiments": order, "tasks": sorted({r.task for r in results}),
        "seeds": sorted({r.seed for r in results}), "normalisation": source,
        "score": "human-normalised final eval" if source else "final eval return",
        "per_experiment": per_arm, "improvement": versus,
        "scores": {arm: [x.tolist() for x in scores] for arm, scores in by_arm.items()},
        "verdict": verdict(per_arm, versus), "runs": [asdict(r) for r in results],
    }  # fmt: skip


def verdict(per_arm: dict[str, Any], versus: dict[str, Any]) -> list[str]:
    """One plain sentence per experiment after the first."""
    lines = []
    for arm, v in versus.items():
        base, p = v["against"], stats.Estimate(**v["probability_of_improvement"])
        a, b = stats.Estimate(**per_arm[base]["iqm"]), stats.Estimate(**per_arm[arm]["iqm"])
        n = min(per_arm[arm]["runs"], per_arm[base]["runs"])
        if p.low is not None and p.high is not None and (p.low > 0.5 or p.high < 0.5):
            better = arm if p.low > 0.5 else base
            lines.append(
                f"{better} scores higher: P({arm} > {base}) = {p.text('.2f')}, an interval "
                f"that excludes 0.5 at {n} seeds (IQM {b.text()} against {a.text()})."
            )
            continue
        need = v["seeds_needed"]
        more = f"; about {need} seeds each would likely tell them apart, if the difference " \
            "is what these runs show" if need else ""  # fmt: skip
        overlap = "overlap" if a.overlaps(b) else "do not overlap"
        lines.append(
            f"no evidence of a difference between {arm} and {base} at {n} seeds: "
            f"P({arm} > {base}) = {p.text('.2f')} includes 0.5, and their IQM intervals "
            f"{overlap}{more}."
        )
    return lines


def table(summary: dict[str, Any]):
    """The answer on one screen: a rich Table, one column per experiment (it fits a
    terminal's 80 columns for two or three)."""
    from rich.table import Table

    arms = summary["experiments"]
    out = Table(title=f"{summary['score']}, seeds {summary['seeds'][0]}-{summary['seeds'][-1]}"
                      "; [95% stratified bootstrap interval]")  # fmt: skip
    out.add_column("")
    for arm in arms:
        out.add_column(arm, justify="right")
    per = summary["per_experiment"]

    def row(name: str, cell) -> None:
        out.add_row(name, *(cell(arm, per[arm]) for arm in arms))

    def est(d: dict | None, fmt: str = ",.1f") -> str:
        return "-" if d is None else stats.Estimate(**d).text(fmt)

    row("runs", lambda arm, s: str(s["runs"]))
    for kind in ("iqm", "median", "mean"):
        row(kind if kind != "iqm" else "IQM", lambda arm, s, k=kind: est(s[k]))
    to = next((s["to_threshold"] for s in per.values() if s["to_threshold"]), None)
    if to:
        row(f"reached {to['threshold']:g}", lambda arm, s: f"{s['to_threshold']['reached']}/"
            f"{s['runs']}")  # fmt: skip
        row("env steps to it (IQM)", lambda arm, s: est(s["to_threshold"]["env_steps_iqm"], ",.0f"))
        row("seconds to it (IQM)", lambda arm, s: est(s["to_threshold"]["seconds_iqm"], ",.0f"))
    versus = summary["improvement"]
    row(f"P(> {arms[0]})", lambda arm, s: est(
        versus[arm]["probability_of_improvement"] if arm in versus else None, ".2f"))  # fmt: skip
    return out


def report(results: list[RunResult], order: list[str], out_dir: Path, console) -> dict:
    """Print the table and the verdict; write compare.json, the pictures and TensorBoard."""
    from rlplat.compare_plots import curves, write_pictures, write_tensorboard

    summary = summarise(results, order)
    summary["curves"] = curves(results, order)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "compare.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(out_dir / "compare.json")  # never half-written
    pictures = write_pictures(summary, out_dir)
    tb = write_tensorboard(summary, out_dir / "tb")
    console.print(table(summary))
    for line in summary["verdict"]:
        console.print(line, highlight=False)
    if summary["normalisation"]:
        console.print(f"scores normalised with {summary['normalisation']}", highlight=False)
    console.print(f"{out_dir / 'compare.json'}; {', '.join(str(p) for p in pictures)}; "
                  f"tensorboard --logdir {tb}", highlight=False, soft_wrap=True)  # fmt: skip
    return summary
