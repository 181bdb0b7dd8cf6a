"""Learning curves from run directories: eval return mean with a +- std band against env
steps, one line per run (several seeds or experiments overlaid), as a PNG."""

from __future__ import annotations

import json
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


_IGNORED = {"name", "seed", "export.model_base_path"}
_STYLES = ["-", "--", ":", "-."]


def _setting(config: dict[str, object], keys: list[str]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={config.get(k)}" for k in keys[:3])


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def plot_runs(run_dirs: list[Path], out: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import yaml

    curves, configs = [], []
    for run_dir in run_dirs:
        records = read_evals(run_dir)
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        configs.append(_flatten(cfg))
        label = f"{cfg.get('name', run_dir.name)} s{cfg.get('seed', '?')}"
        threshold = (cfg.get("eval") or {}).get("threshold")
        curves.append((label, records, threshold, run_dir))
    # Runs that differ in more than name and seed (an ablation, 0 vs 2 collectors, ...)
    # are labelled by the settings that differ; each setting gets a colour, each seed
    # within it a line style.
    differ = [k for k in sorted(set().union(*configs))
              if k not in _IGNORED and len({repr(c.get(k)) for c in configs}) > 1]  # fmt: skip
    groups: dict[str, int] = {}
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    order = sorted(range(len(curves)), key=lambda i: (_setting(configs[i], differ), curves[i][0]))
    seen: dict[str, int] = {}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i in order:
        label, records, _, run_dir = curves[i]
        setting = _setting(configs[i], differ)
        group = groups.setdefault(setting, len(groups))
        style = _STYLES[seen.get(setting, 0) % len(_STYLES)]
        seen[setting] = seen.get(setting, 0) + 1
        label = f"{label}, {setting}" if setting else label
        x = [r["env_steps"] for r in records]
        mean = [r["return_mean"] for r in records]
        std = [r["return_std"] for r in records]
        colour = colours[group % len(colours)]
        ax.plot(x, mean, label=label, linewidth=1.6, color=colour, linestyle=style)
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(x, low, high, color=colour, alpha=0.12, linewidth=0)
    labels = [c[0] for c in curves]
    thresholds = {c[2] for c in curves if c[2] is not None}
    if len(thresholds) == 1:
        ax.axhline(thresholds.pop(), color="grey", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return (mean ± std)")
    ax.set_title(title or ", ".join(sorted(set(labels)))[:100])
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
