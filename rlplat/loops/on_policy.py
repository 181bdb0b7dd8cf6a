"""The on-policy loop (PPO, REINFORCE): roll out with one policy version, train on the
rollout once, send the new weights, repeat.

Every collector rolls out `collect.rollout_length` steps per env with the same weights;
the fragments are joined into one [T, N, ...] rollout (`RolloutGather`), and a fragment
collected with older weights (a replaced or slow Ray collector) is dropped and counted,
never mixed in: the agent's "old" log-probabilities must be the current policy's.

With `collect.overlap`, the next rollout is launched as soon as one is complete, before the
learner trains on it: collectors and learner work at the same time, each rollout is
collected by weights one update older than the learner's (logged as `collect/policy_lag`),
and it carries its collectors' log-probabilities for the learner's importance ratio.
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
    overlap = cfg.collect.overlap
    gather = RolloutGather(
        source.num_fragments, stale_dropped=counters.stale_fragments, max_lag=int(overlap)
    )
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
            rollout = gather.pop()
            if overlap and step < total:  # the next rollout, while this one trains
                for f in source.gather(gather.missing(), cfg.collect.rollout_length, step, False):
                    run.record(f)
                    gather.add(f)
            run.train(rollout)
            run.versions.only(gather.version, agent.train_steps)
            source.broadcast(agent.get_weights(), gather.version)
        # ---- log, evaluate, checkpoint
        if run.log_due(step):
            scalars = {}
            if run.distributed:
                scalars["collect/stale_fragments"] = float(counters.stale_fragments)
            if overlap:
                scalars["collect/policy_lag"] = float(gather.lag)
            run.log(step, schedules, scalars)
        run.evaluate_and_checkpoint(step)
