"""The off-policy loop (DQN and kin): collect into replay, train at the replay ratio.

Locally (`collect.num_actors: 0`) each iteration collects a chunk of `train.train_every`
env steps, then trains the phases that are due. With Ray collectors, collectors run
concurrently, at most one fragment ahead each; the learner trains one phase per iteration
while it owes any, stops relaunching collectors when it falls behind (`ReplayRatio`), and
sends them its weights every `collect.weight_sync_every` gradient steps.
"""

from __future__ import annotations

import math

from rlplat.experience.data import Sample
from rlplat.experience.replay import Replay
from rlplat.experience.sources import Source
from rlplat.loops.replay_ratio import ReplayRatio
from rlplat.loops.session import Session
from rlplat.signals import StopOnSignals


def train_off_policy(run: Session, source: Source, replay: Replay, stop: StopOnSignals) -> None:
    """Train until the env-step budget is spent, no fragment is on its way and no phase is
    owed, or until `stop` is requested (the run checkpoints afterwards)."""
    cfg, agent, counters = run.cfg, run.agent, run.counters
    total, n_envs = cfg.train.env_steps, source.num_envs
    if run.distributed:
        vector_steps = cfg.collect.rollout_length
    else:
        vector_steps = math.ceil(cfg.train.train_every / n_envs)
    ratio = ReplayRatio.for_fragments(
        cfg.train.train_every,
        cfg.train.learning_starts,
        source.num_fragments * vector_steps * n_envs,
    )
    source.broadcast(agent.get_weights(), run.versions.latest)
    sample: Sample | None = None
    td_errors = None
    while not stop.requested:
        step = counters.env_steps
        if step >= total and source.pending == 0 and ratio.owed == 0:
            break
        schedules = run.schedules(step)
        # ---- collect: relaunch idle collectors unless the budget is out or we are behind
        room = step + source.inflight_env_steps < total
        launch = source.idle() if room and not ratio.behind else []
        if not run.distributed:  # the last chunk stops at the budget
            vector_steps = min(vector_steps, math.ceil((total - step) / n_envs))
        for f in source.gather(launch, vector_steps, step, block=ratio.idle):
            run.record(f)
            replay.add(f)
        run.count_restarts(source)
        step = counters.env_steps
        # ---- learn: the phases due (distributed: one, so collection keeps flowing)
        owed = ratio.settle(step, len(replay), counters.train_phases)
        for _ in range(min(owed, 1) if run.distributed else owed):
            sample = replay.sample(cfg.train.batch_size, cfg.train.updates_per_train)
            result = run.train(sample.batch, sample.weights)
            td_errors = result.td_errors
            if td_errors is not None:
                replay.update_priorities(sample.indices, td_errors)
            if sample.weights is not None:
                run.window.add_is_weights(sample.weights)
        ratio.settle(step, len(replay), counters.train_phases)
        sync_due = agent.train_steps - run.versions.synced_at >= cfg.collect.weight_sync_every
        if run.distributed and sync_due:
            source.broadcast(agent.get_weights(), run.versions.next(agent.train_steps))
        # ---- log, evaluate, checkpoint
        if run.log_due(step):
            hists = None
            if sample is not None:  # the last phase's sample
                hists = {"replay/td_errors": td_errors}
                if sample.priorities is not None:
                    hists["replay/sampled_priorities"] = sample.priorities
            run.log(step, schedules, {}, hists)
        run.evaluate_and_checkpoint(step)
