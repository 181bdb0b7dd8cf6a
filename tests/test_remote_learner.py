"""What a learner asks Ray for on a cluster, and the checks a Ray-placed learner makes
(the cluster itself: tests/test_cluster.py, on a node with a GPU Ray counts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlplat.config import LearnerConfig
from rlplat.errors import ConfigError, UserError
from rlplat.remote_learner import PROBE_FILE, check_shared, gpus_to_ask
from rlplat.rundir import resume_command

WHERE = "the Ray cluster at h:6379"


@pytest.mark.parametrize(
    ("learner", "nodes", "asked"),
    [
        ({}, [0, 0], 0),  # auto, no GPU anywhere: the learner stays in rlplat train
        ({}, [0, 2], 1),  # auto, one device
        ({"device": "gpu"}, [0, 1], 1),
        ({"device": "cpu"}, [0, 4], 0),
        ({"strategy": "mirrored"}, [2, 4], 4),  # devices auto: every GPU of the biggest node
        ({"strategy": "mirrored", "devices": 2}, [1, 2], 2),
        ({"strategy": "mirrored", "devices": ["/GPU:0", "/GPU:1"]}, [4], 2),
        ({"strategy": "mirrored", "devices": ["/CPU:0", "/CPU:1"]}, [4], 0),
        ({"strategy": "mirrored", "devices": 2}, [0, 0], 0),  # logical CPUs, here
    ],
)  # fmt: skip
def test_gpus_the_learner_asks_ray_for(learner: dict, nodes: list[float], asked: int):
    assert gpus_to_ask(LearnerConfig(**learner), nodes, WHERE) == asked


def test_gpus_no_single_node_has_are_a_config_error_naming_the_key():
    cfg = LearnerConfig(strategy="mirrored", devices=4)
    with pytest.raises(ConfigError, match=r"^learner.devices: 4 GPUs, but the most on one node "
                       r"of the Ray cluster at h:6379 is 2 \(nodes' GPUs: 2, 2\)$"):  # fmt: skip
        gpus_to_ask(cfg, [2, 2], WHERE)  # 4 in all, but a task runs on one node
    with pytest.raises(ConfigError, match=r"^learner.device: gpu, but no node of the Ray "):
        gpus_to_ask(LearnerConfig(device="gpu"), [0, 0], WHERE)


def test_a_learner_on_a_node_without_the_run_directory_says_so(tmp_path: Path):
    (tmp_path / PROBE_FILE).write_text("the driver's token")
    check_shared(tmp_path, "the driver's token", "gpu-1, 10.0.0.7")
    for run_dir, token in ((tmp_path, "another run's token"), (tmp_path / "absent", "t")):
        with pytest.raises(UserError, match=r"the learner's node \(gpu-1, 10.0.0.7\) does not "
                           r"see this run directory .* shares \(--run-dir\)$"):  # fmt: skip
            check_shared(run_dir, token, "gpu-1, 10.0.0.7")


def test_the_resume_command_names_the_cluster_the_run_joined():
    run = Path("/runs/x")
    assert resume_command(run, None) == "rlplat train --resume /runs/x"
    local = {"address": "local", "local": True}
    assert resume_command(run, local) == "rlplat train --resume /runs/x"
    joined = {"address": "10.0.0.5:6379", "local": False}
    assert resume_command(run, joined) == "rlplat train --resume /runs/x --address 10.0.0.5:6379"
    inside = {"address": "existing", "local": False}  # a Ray the caller started (a trial)
    assert resume_command(run, inside) == "rlplat train --resume /runs/x"
