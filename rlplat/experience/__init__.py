"""Experience: everything between an environment step and a learner's minibatch.

The path of a transition (docs/explanation/data-path.md draws it):

    env step ─► Collector (collect.py: a vector env and an actor-side policy)
              ─► RowSpec (replay.py: what the replay asked for) ─► Fragment (data.py)
              ─► Source (sources.py: in-process, or Ray collector actors)
              ─► on-policy: RolloutGather (collect.py) ─► learner
              ─► off-policy: Replay.add (replay.py)
                    storage (storage.py: whole transitions, or frames once)
                    sampler (sampler.py: uniform or prioritized, over a sum tree)
                 ─► Replay.sample ─► learner ─► Replay.update_priorities

n-step returns are formed in one place (nstep.py), in the collector or at sample time,
as the replay's `RowSpec` says; ShardedReplay (sharded.py) splits the replay over Ray.
This package imports neither Ray nor TensorFlow at import time.
"""
