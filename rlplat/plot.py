"""Learning curves from run directories: eval return mean with a +- std band against env
steps, one line per run (several seeds or experiments overlaid), as a PNG."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rlplat.errors import UserError


def read_evals(run_dir: Path) -> list[dict]:
    """The run's evals (periodic and final) from evals.jsonl, in env-step order."""
    path = run_dir / "evals.jsonl"
    if not path.is_file():
        what = "not a run directory" if not (run_dir / "config.yaml").is_file() else "no evals"
        raise UserError(f"{run_dir}: {what} (no evals.jsonl)")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        raise UserError(f"{run_dir}: evals.jsonl is empty (no eval has run yet)")
    return sorted(records, key=lambda r: r["env_steps"])


# Settings that change when things are written or shown, not what a run learns: two runs
# that differ only in them draw the same curve, so the legend does not list them.
_IGNORED = {"name", "seed", "train.log_every", "eval.every_env_steps", "eval.video",
            "eval.final_episodes"}  # fmt: skip
_IGNORED_SECTIONS = ("checkpoint.", "export.")
_STYLES = ["-", "--", ":", "-."]


def _setting(config: dict[str, object], keys: list[str]) -> str:
    """The differing settings by their dotted names (`checkpoint.every_env_steps=10000`):
    a bare `every_env_steps` could be either of two sections'."""
    return ", ".join(f"{k}={config.get(k)}" for k in keys[:3])


def unique_labels(labels: list[str], run_dirs: list[Path]) -> list[str]:
    """Labels that collide get their run directory's name, or its whole path where the
    names collide too (runs of two experiment folders), so each curve is identifiable."""
    counts = Counter(labels)
    names = Counter(d.name for d, label in zip(run_dirs, labels, strict=True) if counts[label] > 1)
    return [
        label if counts[label] == 1 else f"{label} ({d.name if names[d.name] == 1 else d})"
        for label, d in zip(labels, run_dirs, strict=True)
    ]


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _matters(key: str) -> bool:
    return key not in _IGNORED and not key.startswith(_IGNORED_SECTIONS)


def curve_labels(run_dirs: list[Path]) -> tuple[list[str], list[str]]:
    """(legend label, differing settings) per run: `NAME sSEED` (only `sSEED` when every
    run has the same name: the title has it), plus the settings that differ between the
    runs and change what they learn (an ablation, 0 vs 2 collectors, ...), unique per run."""
    import yaml

    configs, names, seeds = [], [], []
    for run_dir in run_dirs:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        configs.append(_flatten(cfg))
        names.append(str(cfg.get("name", run_dir.name)))
        seeds.append(f"s{cfg.get('seed', '?')}")
    if len(set(names)) > 1:
        seeds = [f"{n} {s}" for n, s in zip(names, seeds, strict=True)]
    names = seeds
    differ = [k for k in sorted(set().union(*configs))
              if _matters(k) and len({repr(c.get(k)) for c in configs}) > 1]  # fmt: skip
    settings = [_setting(c, differ) for c in configs]
    labels = [f"{n}, {s}" if s else n for n, s in zip(names, settings, strict=True)]
    return unique_labels(labels, run_dirs), settings


def default_out(run_dirs: list[Path]) -> Path:
    """curves.png beside what it draws: in the run directory, or in the runs' common
    parent (an experiment's folder, for its seeds)."""
    import os

    parents = [str(d.resolve()) for d in run_dirs]
    return Path(parents[0] if len(set(parents)) == 1 else os.path.commonpath(parents)) / (
        "curves.png"
    )


def plot_runs(run_dirs: list[Path], out: Path | None = None, title: str | None = None) -> Path:
    """Draw the runs into `out` (default_out when None); returns the path written."""
    out = out if out is not None else default_out(run_dirs)
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import yaml

    records = [read_evals(run_dir) for run_dir in run_dirs]
    labels, settings = curve_labels(run_dirs)
    cfgs = [yaml.safe_load((d / "config.yaml").read_text()) or {} for d in run_dirs]
    thresholds = {(c.get("eval") or {}).get("threshold") for c in cfgs} - {None}
    # Each setting gets a colour, each seed within it a line style.
    groups: dict[str, int] = {}
    seen: dict[str, int] = {}
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i in sorted(range(len(run_dirs)), key=lambda i: (settings[i], labels[i])):
        setting = settings[i]
        group = groups.setdefault(setting, len(groups))
        style = _STYLES[seen.get(setting, 0) % len(_STYLES)]
        seen[setting] = seen.get(setting, 0) + 1
        x = [r["env_steps"] for r in records[i]]
        mean = [r["return_mean"] for r in records[i]]
        std = [r["return_std"] for r in records[i]]
        colour = colours[group % len(colours)]
        ax.plot(x, mean, label=labels[i], linewidth=1.6, color=colour, linestyle=style)
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(x, low, high, color=colour, alpha=0.12, linewidth=0)
    if len(thresholds) == 1:
        ax.axhline(thresholds.pop(), color="grey", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return (mean ± std)")
    names = {f"{c.get('name', '?')} s{c.get('seed', '?')}" for c in cfgs}
    ax.set_title(title or ", ".join(sorted(names))[:100])
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0")
    )
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), fontsize="small", frameon=False)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, bbox_inches="tight")
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return out
