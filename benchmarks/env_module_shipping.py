"""What shipping a `module:Class` env module to Ray workers costs (runtime_env py_modules).

    .venv/bin/python benchmarks/env_module_shipping.py --rounds 3

Each round starts a fresh local Ray (2 CPUs) in a child process, twice: once plain, once
with a one-file env module in the job's `py_modules` (what rlplat.cluster does for
`env.id: module:Class` modules that are not installed), and times `ray.init` and the
first call of 2 actors with rlplat's collector runtime_env that import the module (plain:
they return at once). The child
runs from another directory than the module's, as a resumed run may. Prints one JSON line
with the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, os, sys, time
sys.path.append(sys.argv[2])
import userenv_bench
import ray
shipped = sys.argv[1] == "py_modules"
runtime_env = {"py_modules": [userenv_bench]} if shipped else {}
t0 = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", runtime_env=runtime_env)
t1 = time.perf_counter()

@ray.remote(num_cpus=1)
class Actor:
    def value(self, shipped):
        if not shipped:
            return 42
        import userenv_bench
        return userenv_bench.VALUE

collector_env = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}  # as rlplat's collectors ask
actors = [Actor.options(runtime_env=collector_env).remote() for _ in range(2)]
assert ray.get([a.value.remote(shipped) for a in actors], timeout=120) == [42, 42]
t2 = time.perf_counter()
print(json.dumps({"init_s": t1 - t0, "first_call_s": t2 - t1}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        module_dir, cwd = Path(tmp, "project"), Path(tmp, "elsewhere")
        module_dir.mkdir()
        cwd.mkdir()
        (module_dir / "userenv_bench.py").write_text("VALUE = 42\n")
        figures: dict[str, list[dict]] = {"plain": [], "py_modules": []}
        for _ in range(args.rounds):
            for mode in figures:  # alternate, so load changes hit both alike
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, mode, str(module_dir)],
                    cwd=cwd, capture_output=True, text=True, timeout=300, check=True,
                )  # fmt: skip
                figures[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"rounds": args.rounds}
    for mode, rows in figures.items():
        for key in ("init_s", "first_call_s"):
            result[f"{mode}_{key}_median"] = round(statistics.median(r[key] for r in rows), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
