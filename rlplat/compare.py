"""`rlplat compare`: train every experiment on the same fresh seeds, in parallel, and ask
whether one is better (the statistics and pictures: rlplat/compare_report.py).

Each run is an ordinary `rlplat train` process and run directory (so a run compares
exactly like one a user trains), started with `--seed S --run-dir DIR --no-export`, as
many at once as the CPUs hold (a run with N Ray collectors takes N + 1), joining a Ray
cluster with `--address` as `train` does (the learner goes to a GPU node when the file
asks for one). The plan (experiments, seeds, overrides) is written first, so `--resume`
continues an interrupted comparison: finished runs stay, interrupted ones resume from
their checkpoint, the rest start.

An experiment is one file, or several (`LABEL=a.yaml,b.yaml`: one per task, e.g. Atari
games); every experiment must cover the same tasks (env ids).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlplat.errors import UserError
from rlplat.runs import run_info

PLAN_FILE = "plan.json"
FIRST_SEED = 1000  # comparisons' seeds: far from the small seeds the ready files were tuned on


@dataclass(frozen=True)
class Arm:
    """One experiment of a comparison: a label and one experiment file per task."""

    label: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class RunSpec:
    arm: str
    task: str  # env id
    file: str
    seed: int
    run_dir: Path


@dataclass
class Plan:
    dir: Path
    arms: list[Arm]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    address: str | None = None

    def runs(self) -> list[RunSpec]:
        """Seed by seed, each arm in turn: a comparison cut short is still balanced."""
        from rlplat import config as config_mod

        tasks = {f: config_mod.load(f, self.overrides).env.id for a in self.arms for f in a.files}
        out = []
        for seed in self.seeds:
            for arm in self.arms:
                for file in arm.files:
                    run_dir = self.dir / "runs" / arm.label / _slug(tasks[file]) / f"s{seed}"
                    out.append(RunSpec(arm.label, tasks[file], file, seed, run_dir))
        return out

    def save(self) -> None:
        data = {**asdict(self), "dir": str(self.dir)}
        (self.dir / PLAN_FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Plan:
        path = directory / PLAN_FILE
        try:
            data = json.loads(path.read_text())
            arms = [Arm(a["label"], tuple(a["files"])) for a in data["arms"]]
            return cls(directory, arms, data["seeds"], data["overrides"], data["address"])
        except FileNotFoundError:
            raise UserError(f"{path}: no comparison to resume there") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a comparison plan ({e})") from None


def _slug(task: str) -> str:
    return task.replace("/", "-")


def parse_arms(specs: list[str], overrides: list[str]) -> list[Arm]:
    """`FILE` or `LABEL=FILE[,FILE...]` per experiment, checked: the files load, labels
    differ, and every experiment covers the same tasks."""
    from rlplat import config as config_mod

    if len(specs) < 2:
        raise UserError("compare needs at least two experiments (or --runs RUN_DIR...)")
    arms, tasks = [], {}
    for spec in specs:
        label, _, files = spec.rpartition("=")
        paths = [Path(f).resolve() for f in files.split(",")]
        label = label or paths[0].stem
        for path in paths:
            if not path.is_file():
                raise UserError(f"{path}: no such experiment file")
        envs = [config_mod.load(p, overrides).env.id for p in paths]
        if len(set(envs)) != len(envs):
            raise UserError(f"{spec}: two files for the same task ({envs})")
        arms.append(Arm(label, tuple(str(p) for p in paths)))
        tasks[label] = sorted(envs)
    if len({a.label for a in arms}) != len(arms):
        raise UserError("two experiments share a label: name them, LABEL=FILE")
    if len({tuple(t) for t in tasks.values()}) > 1:
        raise UserError(f"the experiments cover different tasks: {tasks}")
    return arms


def choose_seeds(n: int, first: int, arms: list[Arm], allow_tuned: bool) -> list[int]:
    """N seeds from `first`; a file's own `seed` (the one it was shown, and maybe tuned,
    on) is refused unless `allow_tuned`."""
    from rlplat import config as config_mod

    if n < 1:
        raise UserError(f"--seeds: at least 1, got {n}")
    seeds = list(range(first, first + n))
    if not allow_tuned:
        for file in (f for arm in arms for f in arm.files):
            own = config_mod.load(file).seed
            if own in seeds:
                raise UserError(
                    f"seed {own} is {Path(file).name}'s own seed (its results may have been "
                    f"tuned on it); choose --first-seed past it, or --allow-tuned-seeds"
                )
    return seeds


def cpus_per_run(file: str, overrides: list[str]) -> int:
    from rlplat import config as config_mod

    return 1 + config_mod.load(file, overrides).collect.num_actors


def parallel_runs(specs: list[RunSpec], overrides: list[str], jobs: int | None) -> int:
    """How many runs at once: --jobs, else as many as this machine's CPUs hold."""
    if jobs is not None:
        if jobs < 1:
            raise UserError(f"--jobs: at least 1, got {jobs}")
        return jobs
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    widest = max(cpus_per_run(f, overrides) for f in {s.file for s in specs})
    return max(1, (cpus or 1) // widest)


def run_command(spec: RunSpec, plan: Plan, resume: bool) -> list[str]:
    exe = str(Path(sys.executable).with_name("rlplat"))
    if resume:
        cmd = [exe, "train", "--resume", str(spec.run_dir)]
    else:
        sets = [a for o in plan.overrides for a in ("--set", o)]
        cmd = [exe, "train", spec.file, "--seed", str(spec.seed), "--run-dir",
               str(spec.run_dir), "--no-export", *sets]  # fmt: skip
    return cmd + (["--address", plan.address] if plan.address else [])


def _todo(spec: RunSpec) -> str:
    """ "done", "resume" or "start" (a run stopped before its first checkpoint starts over)."""
    if not spec.run_dir.exists():
        return "start"
    status = run_info(spec.run_dir).status
    if status == "finished":
        return "done"
    if status in ("running", "unknown"):
        raise UserError(f"{spec.run_dir}: another process is training it")
    if status == "interrupted":
        return "resume"
    shutil.rmtree(spec.run_dir)
    return "start"


@dataclass
class _Running:
    spec: RunSpec
    proc: subprocess.Popen
    started: float


class CompareInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the running runs were stopped at a checkpoint."""


def execute(plan: Plan, jobs: int | None, say) -> list[str]:
    """Train every run of the plan not finished yet, `jobs` at a time (default: as the
    CPUs allow); `say(line)` reports each start and end. Returns the runs that failed
    (their logs named). Ctrl-C or SIGTERM stops the running ones at a checkpoint (each
    run heeds its signal as `rlplat train` does) and raises CompareInterrupted."""
    specs = plan.runs()
    todo = [(s, _todo(s)) for s in specs]
    pending = [(s, t) for s, t in todo if t != "done"]
    width = parallel_runs(specs, plan.overrides, jobs)
    done = len(specs) - len(pending)
    say(f"{len(specs)} runs ({done} done), {width} at a time; logs in {plan.dir / 'logs'}")
    (plan.dir / "logs").mkdir(parents=True, exist_ok=True)
    running: list[_Running] = []
    failed: list[str] = []
    stop = _StopFlag()
    # Both signals explicitly (a process started in the background of a script inherits
    # SIGINT ignored), and only noted: the loop stops the runs between two starts, so
    # no run is started and left behind by a signal in the middle of starting it.
    previous = {sig: signal.signal(sig, stop.note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while (pending or running) and not stop.seen:
            while pending and len(running) < width and not stop.seen:
                spec, what = pending.pop(0)
                running.append(_start(spec, plan, what == "resume", say))
            time.sleep(0.2)
            for r in [r for r in running if r.proc.poll() is not None]:
                running.remove(r)
                done += 1
                failed += _finished(r, plan, done, len(specs), say)
        if stop.seen:
            _stop(running, say)
            raise CompareInterrupted()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return failed


class _StopFlag:
    seen = False

    def note(self, signum: int, frame: object) -> None:
        self.seen = True


def _log(spec: RunSpec, plan: Plan) -> Path:
    return plan.dir / "logs" / f"{spec.arm}-{_slug(spec.task)}-s{spec.seed}.log"


def _start(spec: RunSpec, plan: Plan, resume: bool, say) -> _Running:
    """The run in a session of its own: only this process passes it a signal, once."""
    with _log(spec, plan).open("a") as log:
        proc = subprocess.Popen(run_command(spec, plan, resume), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    say(f"{'resume' if resume else 'start '} {spec.arm} {spec.task} seed {spec.seed}")
    return _Running(spec, proc, time.monotonic())


def _finished(r: _Running, plan: Plan, done: int, total: int, say) -> list[str]:
    spec, seconds = r.spec, time.monotonic() - r.started
    final = run_info(spec.run_dir).final_eval
    if r.proc.returncode == 0 and final is not None:
        say(f"[{done}/{total}] {spec.arm} {spec.task} seed {spec.seed}: final eval "
            f"{final['return_mean']:.1f} ({seconds:.0f} s)")  # fmt: skip
        return []
    say(f"[{done}/{total}] {spec.arm} {spec.task} seed {spec.seed}: FAILED "
        f"(exit {r.proc.returncode}; {_log(spec, plan)})")  # fmt: skip
    return [f"{spec.arm} {spec.task} seed {spec.seed}: {_log(spec, plan)}"]


def _stop(running: list[_Running], say) -> None:
    """SIGINT to each running run (it checkpoints and exits), then wait for them."""
    for r in running:
        if r.proc.poll() is None:
            os.killpg(r.proc.pid, signal.SIGINT)
    for r in running:
        try:
            r.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait()
        say(f"stopped {r.spec.arm} {r.spec.task} seed {r.spec.seed} at its last checkpoint")


@dataclass(frozen=True)
class CompareOptions:
    """`rlplat compare`'s arguments (rlplat/cli.py declares them)."""

    experiments: list[str]  # experiment specs, or run directories with `runs`
    seeds: int = 5
    first_seed: int = FIRST_SEED
    allow_tuned_seeds: bool = False
    overrides: list[str] = field(default_factory=list)
    jobs: int | None = None
    address: str | None = None
    out: Path | None = None
    resume: Path | None = None
    runs: bool = False


def new_plan(opts: CompareOptions) -> Plan:
    arms = parse_arms(opts.experiments, opts.overrides)
    seeds = choose_seeds(opts.seeds, opts.first_seed, arms, opts.allow_tuned_seeds)
    out = opts.out or _default_out()
    if (out / PLAN_FILE).exists():
        raise UserError(f"{out}: a comparison is there already; continue it with --resume {out}")
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(out.resolve(), arms, seeds, list(opts.overrides), opts.address)
    plan.save()
    return plan


def _default_out() -> Path:
    return Path("runs") / "compare" / time.strftime("%Y%m%d-%H%M%S")


def compare(opts: CompareOptions, console) -> int:
    """Run (or continue, or only read) a comparison and report it; the exit status."""
    from rlplat.compare_report import read_run, report

    say = lambda line: console.print(line, highlight=False, soft_wrap=True)  # noqa: E731
    if opts.runs:
        results = [read_run(Path(d)) for d in opts.experiments]
        order = list(dict.fromkeys(r.arm for r in results))
        if len(order) < 2:
            raise UserError("--runs: the runs are all of one experiment; compare two or more")
        report(results, order, opts.out or _default_out(), console)
        return 0
    if opts.resume is not None:
        if opts.experiments:
            raise UserError("--resume continues the comparison as planned: no experiments")
        plan = Plan.load(opts.resume)
    else:
        plan = new_plan(opts)
    say(f"comparing {', '.join(a.label for a in plan.arms)} on seeds "
        f"{plan.seeds[0]}-{plan.seeds[-1]} in {plan.dir}")  # fmt: skip
    try:
        failed = execute(plan, opts.jobs, say)
    except CompareInterrupted:
        say(f"interrupted; continue with: rlplat compare --resume {plan.dir}")
        return 130
    if failed:
        say("failed runs (rlplat compare --resume retries them):\n  " + "\n  ".join(failed))
        return 1
    results = [read_run(s.run_dir, s.arm) for s in plan.runs()]
    report(results, [a.label for a in plan.arms], plan.dir, console)
    return 0
