"""The on-policy loop (PPO, REINFORCE): roll out with one policy version, train on the
rollout once, send the new weights, repeat.

Every collector rolls out `collect.rollout_length` steps per env with the same weights;
the fragments are joined into one [T, N, ...] rollout (`RolloutGather`), and a fragment
collected with older weights (a replaced or slow Ray collector) is dropped and counted,
never mixed in: the agent's "old" log-probabilities must be the current policy's.
"""

from __future__ import annotations

from rlplat.experience.collect import RolloutGather
from rlplat.experience.sources import Source
from rlplat.loops.session import Session
from rlplat.signals import StopOnSignals


def train_on_policy(run: Session, source: Source, stop: StopOnSignals) -> None:
    """Train until the env-step budget is spent and no fragment is on its way, or until
    `stop` is requested (the run checkpoints afterwards)."""
    cfg, agent, counters = run.cfg, run.agent, run.counters
    total = cfg.train.env_steps
    gather = RolloutGather(source.num_fragments, stale_dropped=counters.stale_fragments)
    source.broadcast(agent.get_weights(), gather.version)
    while not stop.requested:
        step = counters.env_steps
        if step >= total and source.pending == 0:
            break
        schedules = run.schedules(step)
        # ---- collect: a fragment from each collector whose part of the rollout is missing
        launch = gather.missing() if step < total else []
        for f in source.gather(launch, cfg.collect.rollout_length, step, block=True):
            run.record(f)
            gather.add(f)
        counters.stale_fragments = gather.stale_dropped
        run.count_restarts(source)
        step = counters.env_steps
        # ---- learn: once per complete rollout, then the new weights go out
        if gather.ready():
            run.train(gather.pop())
            run.versions.only(gather.version, agent.train_steps)
            source.broadcast(agent.get_weights(), gather.version)
        # ---- log, evaluate, checkpoint
        if run.log_due(step):
            run.log(step, schedules, {"collect/stale_fragments": float(counters.stale_fragments)})
        run.evaluate_and_checkpoint(step)
