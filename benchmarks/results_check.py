"""The results check: train each ready experiment on held-out seeds and say what it reaches.

    .venv/bin/python benchmarks/results_check.py experiments/cartpole_dqn.yaml --seeds 21 22 23
    .venv/bin/python benchmarks/results_check.py --all --seeds 21 22 23 24 25 --jobs 2

Per experiment file: the final deterministic eval (its `eval.final_episodes`, >= 20) on
every seed, with the success rate (final >= `eval.threshold`) and the interquartile mean
(IQM) with a 95% bootstrap interval over seeds (rlplat/stats.py); env steps and seconds to
the first periodic eval >= threshold, IQM with interval, a run that never reached it
counted at its whole budget (so the figure is never flattered by dropping it). Atari files
are skipped (10M env steps: days per seed on a CPU). Each file's result goes to
benchmarks/results/results_check_NAME.json; one JSON line with all of them is printed.
`--write-headers` rewrites each file's "Measured" block (between the `# --- measured`
and `# ---` lines) from the result, so a header says what this script measured and
nothing else. Seconds depend on the machine; env steps and returns do not, on one machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_text  # noqa: E402
from train_to_threshold import run_seed, to_threshold  # noqa: E402

from rlplat.stats import Estimate, estimate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BEGIN, END = "# --- measured", "# ---"


def skip_reason(path: Path) -> str | None:
    raw = yaml.safe_load(path.read_text())
    if raw.get("env", {}).get("atari") is not None:
        return "Atari: a 10M-env-step budget takes days per seed on a CPU"
    return None


def summarize(path: Path, seeds: list[int], overrides: list[str], runs: list[dict]) -> dict:
    threshold = runs[0]["threshold"]
    finals = [r["final_eval_mean"] for r in runs]
    out = {
        "benchmark": "results_check",
        "experiment": path.stem,
        "file": str(path),
        "seeds": seeds,
        "overrides": overrides,
        "threshold": threshold,
        "final_eval_iqm": estimate(finals).to_dict(),
        "final_eval_mean": estimate(finals, statistic=lambda a: float(a.mean())).to_dict(),
        "runs": runs,
    }
    if threshold is not None:
        out["final_ge_threshold"] = f"{sum(f >= threshold for f in finals)}/{len(runs)}"
        out["reached_threshold"] = f"{sum(r['reached'] for r in runs)}/{len(runs)}"
        steps = [to_threshold(r, "env_steps") for r in runs]
        secs = [to_threshold(r, "wall_s") for r in runs]
        out["env_steps_to_threshold_iqm"] = estimate(steps).to_dict()
        out["wall_s_to_threshold_iqm"] = estimate(secs).to_dict()
    return out


def marker(tag: str) -> str:
    """The first words of a measured block: one block per tag (e.g. `_ray` for a run of
    the same file with Ray collectors)."""
    return f"{BEGIN} [{tag.strip('_')}] by" if tag else f"{BEGIN} by"


def header_lines(result: dict, command: str, tag: str = "") -> list[str]:
    """The experiment file's "Measured" block for `result`."""
    if "skipped" in result:
        return [marker(tag) + f" benchmarks/results_check.py: skipped ({result['skipped']})", END]
    seeds = " ".join(map(str, result["seeds"]))
    iqm = result["final_eval_iqm"]
    finals = " / ".join(f"{r['final_eval_mean']:.1f}" for r in result["runs"])
    episodes = min(r["final_eval_episodes"] for r in result["runs"])
    lines = [marker(tag) + f" benchmarks/results_check.py (held-out seeds {seeds})"]
    if result["threshold"] is not None:
        lines.append(
            f"# final {episodes}-episode eval >= {result['threshold']:g} on "
            f"{result['final_ge_threshold']}"
            f" seeds; first eval >= {result['threshold']:g} on {result['reached_threshold']}"
        )
    lines.append(f"# final eval IQM {_text(iqm)} (95% bootstrap interval); finals {finals}")
    if result["threshold"] is not None:
        steps, secs = result["env_steps_to_threshold_iqm"], result["wall_s_to_threshold_iqm"]
        lines.append(
            f"# to the first eval >= threshold (IQM; a run that never got there counts its "
            f"budget):\n#   env steps {_text(steps, ',.0f')}, seconds {_text(secs, ',.0f')} "
            "(seconds: on a 2-core x86 CPU, machine- and load-dependent)"
        )
    lines += [f"# {command}", END]
    return lines


def _text(e: dict, fmt: str = ",.1f") -> str:
    return Estimate(**e).text(fmt)


def write_header(path: Path, lines: list[str], tag: str = "") -> None:
    """Replace the file's measured block for `tag` (or insert one before `name:`; a bare
    `# --- measured` line with its `# ---` is an empty block)."""
    text = path.read_text().splitlines()
    mine = [i for i, line in enumerate(text) if line.startswith(marker(tag))]
    if not tag:
        mine += [i for i, line in enumerate(text) if line == BEGIN]
    if mine:
        start = mine[0]
        end = next(i for i in range(start + 1, len(text)) if text[i].strip() == END)
        text[start : end + 1] = lines
    else:
        at = next(i for i, line in enumerate(text) if line.startswith("name:"))
        text[at:at] = lines
    path.write_text("\n".join(text) + "\n")


def check(path: Path, seeds: list[int], overrides: list[str], jobs: int, root: Path) -> dict:
    reason = skip_reason(path)
    if reason:
        return {"benchmark": "results_check", "experiment": path.stem, "skipped": reason}
    args = [(str(path), s, overrides, root / path.stem) for s in seeds]
    load_before = os.getloadavg()[0]  # seconds depend on what else the machine ran
    if jobs > 1:
        ctx = multiprocessing.get_context("spawn")  # TensorFlow does not survive a fork
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            runs = list(pool.map(run_seed, *zip(*args, strict=True)))
    else:
        runs = [run_seed(*a) for a in args]
    for run in runs:
        q = max_scalar(root / path.stem / f"seed{run['seed']}" / "tb", "losses/q_values")
        if q is not None:  # value-based agents: a divergence shows as Q far above returns
            run["max_mean_q_value"] = round(q, 2)
    result = summarize(path, seeds, overrides, runs)
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["machine"] = machine_text()
    return result


def max_scalar(tb_dir: Path, tag: str) -> float | None:
    """The largest value a run logged under `tag` (None if it logged none)."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    values = [
        float(tf.make_ndarray(v.tensor))
        for path in sorted(tb_dir.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(path)).Load()
        for v in event.summary.value
        if v.tag == tag
    ]
    return max(values) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiments", nargs="*", type=Path)
    ap.add_argument("--all", action="store_true", help="every file in experiments/")
    ap.add_argument("--seeds", type=int, nargs="+", default=[21, 22, 23, 24, 25])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--jobs", type=int, default=1, help="seeds trained at once")
    ap.add_argument("--write-headers", action="store_true")
    ap.add_argument("--tag", default="", help="suffix of the results file names")
    args = ap.parse_args()
    paths = sorted((REPO / "experiments").glob("*.yaml")) if args.all else args.experiments
    root = Path(tempfile.mkdtemp(prefix="rlplat-results-"))
    results = []
    for path in paths:
        result = check(path, args.seeds, args.overrides, args.jobs, root)
        results.append(result)
        name = f"results_check_{path.stem}{args.tag}.json"
        (RESULTS / name).write_text(json.dumps(result) + "\n")
        if args.write_headers:
            seeds = " ".join(map(str, args.seeds))
            sets = "".join(f" --set {item}" for item in args.overrides)
            command = f".venv/bin/python benchmarks/results_check.py {path} --seeds {seeds}{sets}"
            write_header(path, header_lines(result, command, args.tag), args.tag)
    print(json.dumps({"benchmark": "results_check", "results": results}), flush=True)


if __name__ == "__main__":
    main()
