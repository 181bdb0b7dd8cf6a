"""The training loops, one per regime, each a page read top to bottom:

- `on_policy.train_on_policy`: every collector rolls out with the same weights, the
  rollout trains once, new weights go out (PPO, REINFORCE).
- `off_policy.train_off_policy`: collect into replay, train phases at the replay ratio
  (`replay_ratio.ReplayRatio`), send weights to remote collectors now and then (DQN).

`rlplat.train.Trainer` picks one from `agent.on_policy` and owns everything around it (set-up,
resume, final eval, checkpoints, export); `session.Session` is what both loops share
within a run: counters, logs, and the periodic evals and checkpoints.
"""
