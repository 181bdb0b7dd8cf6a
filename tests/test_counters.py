"""The run's counters (rlplat.loops.counters.RunCounters) against state.json as checkpoints
have written it: what an older rlplat wrote must still resume."""

from __future__ import annotations

import json

from rlplat.loops.counters import RunCounters

# A checkpoint's state.json written before the counters were a dataclass (lunarlander_pg,
# 40,000 env steps), the agent's RNG state shortened.
OLD_STATE = json.loads(
    '{"env_steps": 49152, "episodes": 516, "wall_s": 4.592675767999026, "evals": '
    '[{"env_steps": 49152, "wall_s": 4.498, "episodes": 20, "return_mean": -39.58231071339036, '
    '"return_std": 87.40455433368247, "final": true}], "first_threshold": null, '
    '"train_phases": 3, "actor_restarts": 0, "stale_fragments": 0, "train_steps": 3072, '
    '"agent": {"rng": {"bit_generator": "PCG64"}}}'
)


def test_an_old_checkpoints_counters_load_and_write_back_unchanged():
    counters = RunCounters.from_checkpoint(OLD_STATE, updates_per_train=1024)
    assert counters.env_steps == 49152 and counters.episodes == 516
    assert counters.train_phases == 3 and counters.first_threshold is None
    assert counters.evals[0]["return_mean"] == OLD_STATE["evals"][0]["return_mean"]
    written = counters.to_checkpoint()
    # the same keys in the same order; the Checkpointer adds train_steps and agent
    assert list(written) == [k for k in OLD_STATE if k not in ("train_steps", "agent")]
    assert json.dumps(written) == json.dumps(
        {k: v for k, v in OLD_STATE.items() if k not in ("train_steps", "agent")}
    )


def test_counters_an_older_checkpoint_lacks_take_defaults():
    """Before phases, restarts and stale fragments were counted: phases from train_steps."""
    state = {"env_steps": 800, "episodes": 9, "wall_s": 3, "evals": [],
             "first_threshold": {"env_steps": 600, "wall_s": 2.5}, "train_steps": 130}  # fmt: skip
    counters = RunCounters.from_checkpoint(state, updates_per_train=10)
    assert counters.train_phases == 13
    assert counters.actor_restarts == 0 and counters.stale_fragments == 0
    assert counters.wall_s == 3.0 and isinstance(counters.wall_s, float)
    assert counters.first_threshold == {"env_steps": 600, "wall_s": 2.5}


def test_a_copy_written_is_not_the_live_counters():
    counters = RunCounters(evals=[{"env_steps": 1, "final": False}])
    written = counters.to_checkpoint()
    counters.evals.append({"env_steps": 2, "final": False})
    counters.evals[0]["env_steps"] = 5
    assert written["evals"] == [{"env_steps": 1, "final": False}]
    assert RunCounters.from_checkpoint(written, 1) == RunCounters(
        evals=[{"env_steps": 1, "final": False}]
    )
