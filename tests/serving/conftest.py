"""One set of models and one server for the whole serving package (starting one costs a
TensorFlow import and three exports)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.helpers import PPO, RayServer, Server, export_tiny


@pytest.fixture(scope="package")
def models(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("serving") / "models"
    export_tiny(base, "cartpole", seed=1)  # version 1
    export_tiny(base, "cartpole", seed=2)  # version 2: different weights
    export_tiny(base, "pg", seed=0, agent=PPO)
    return base


@pytest.fixture(scope="package")
def single_server(models):
    s = Server(models)
    yield s
    s.stop()


@pytest.fixture(scope="package")
def server(single_server):
    return single_server


@pytest.fixture(scope="package")
def ray_server(models):
    """`rlplat serve --ray --replicas 2` over the same models (the conformance tests run
    against both: test_rest.py, test_grpc.py)."""
    s = RayServer(models)
    yield s
    s.stop()


@pytest.fixture(scope="module", params=["one process", "ray replicas"])
def either_server(request):
    name = "single_server" if request.param == "one process" else "ray_server"
    return request.getfixturevalue(name)


@pytest.fixture
def one_version(tmp_path) -> tuple[Path, Path]:
    base, staging = tmp_path / "models", tmp_path / "staging"
    export_tiny(base, "cartpole", seed=1)
    export_tiny(staging, "cartpole", seed=2)
    return base, staging / "cartpole" / "1"
