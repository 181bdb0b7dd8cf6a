"""rlplat serve, versions: hot reload under load, rollback and labels through the config,
half-written versions."""

from __future__ import annotations

import logging
import os
import shutil

import pytest

from rlplat.errors import ConfigError
from rlplat.serving import config as serving_config
from rlplat.serving.models import ModelManager
from serving.helpers import (
    OBS,
    Hammer,
    Server,
    reference,
    serves,
    states,
)


def test_hot_reload_then_rollback_and_labels_through_the_config(one_version, tmp_path):
    base, v2_staged = one_version
    v1, v2 = reference(base / "cartpole" / "1", OBS), reference(v2_staged, OBS)
    cfg = tmp_path / "serving.yaml"
    cfg.write_text("models:\n  - name: cartpole\n")
    server = Server(base, "--config", str(cfg))
    hammer = Hammer(server)
    try:
        assert serves(server, v1)
        hammer.start()
        shutil.copytree(v2_staged, base / "cartpole" / ".incoming")
        os.rename(base / "cartpole" / ".incoming", base / "cartpole" / "2")  # as rlplat export
        server.wait_status(
            "/v1/models/cartpole/versions/2", lambda s: states(s) == {"2": "AVAILABLE"}
        )
        assert serves(server, v2)
        server.wait_status("/v1/models/cartpole", lambda s: states(s) == {"2": "AVAILABLE",
                                                                          "1": "END"})  # fmt: skip

        # Rollback: pin version 1 in the config (re-read on change, no restart).
        cfg.write_text("models:\n  - name: cartpole\n    version_policy: {specific: [1]}\n")
        server.wait_status("/v1/models/cartpole", lambda s: states(s).get("2") == "END"
                           and states(s).get("1") == "AVAILABLE")  # fmt: skip
        assert serves(server, v1)

        # Both, with labels: stable -> 1, canary -> 2; no label -> the latest.
        cfg.write_text(
            "models:\n  - name: cartpole\n    version_policy: {specific: [1, 2]}\n"
            "    labels: {stable: 1, canary: 2}\n"
        )
        server.wait_status("/v1/models/cartpole/labels/canary",
                           lambda s: states(s) == {"2": "AVAILABLE"})  # fmt: skip
        assert serves(server, v1, "/v1/models/cartpole/labels/stable:predict")
        assert serves(server, v2, "/v1/models/cartpole/labels/canary:predict")
        assert serves(server, v1, "/v1/models/cartpole/versions/1:predict")
        assert serves(server, v2)

        # A broken edit is reported in the log and changes nothing.
        cfg.write_text("models:\n  - name: cartpole\n    version_polcy: {latest: 1}\n")
        server.wait_log("did you mean 'version_policy'")
        assert serves(server, v1, "/v1/models/cartpole/labels/stable:predict")
        hammer.wait_ok(50)
    finally:
        hammer.stop()
        server.stop()
    assert hammer.ok >= 50 and hammer.failures == [], hammer.failures[:3]


def test_a_half_written_version_is_never_served(one_version):
    base, v2_staged = one_version
    v1, v2 = reference(base / "cartpole" / "1", OBS), reference(v2_staged, OBS)
    server = Server(base)
    hammer = Hammer(server)
    hammer.start()
    try:
        # A copy in progress: the graph file half there, no variables yet, then a pause.
        target = base / "cartpole" / "2"
        target.mkdir()
        pb = (v2_staged / "saved_model.pb").read_bytes()
        (target / "saved_model.pb").write_bytes(pb[: len(pb) // 2])
        status, _ = server.wait_status("/v1/models/cartpole", lambda s: states(s).get("2") == "END")
        failed = next(s for s in status["model_version_status"] if s["version"] == "2")
        assert failed["status"]["error_code"] != "OK" and failed["status"]["error_message"]
        assert states(status)["1"] == "AVAILABLE" and serves(server, v1)

        # The copy completes: the version is retried (its files changed) and takes over.
        shutil.copytree(v2_staged, target, dirs_exist_ok=True)
        server.wait_status("/v1/models/cartpole", lambda s: states(s).get("2") == "AVAILABLE")
        assert serves(server, v2)
        hammer.wait_ok(20)
    finally:
        hammer.stop()
        server.stop()
    assert hammer.ok >= 20 and hammer.failures == [], hammer.failures[:3]


def test_a_config_being_written_is_not_applied(models, tmp_path, caplog):
    """An editor that truncates the file and then writes it, or a copy in progress: an
    empty file, or one the last poll saw otherwise, is never put in force; the running
    config stays (one log line for a file that is wrong)."""
    cfg = tmp_path / "serving.yaml"
    pinned = "models:\n  - name: cartpole\n    version_policy: {specific: [1]}\n"
    cfg.write_text(pinned)
    manager = ModelManager(models, serving_config.load(cfg), cfg)
    before = manager.cfg
    cfg.write_text("")  # `: > serving.yaml`
    with caplog.at_level(logging.ERROR, logger="rlplat.serve"):
        assert not manager._reload_config()  # a changed file is read once two polls agree
        assert not manager._reload_config()
    assert manager.cfg == before
    assert "serving config not reloaded, the previous one stays" in caplog.text
    assert "empty (write `{}` for every default)" in caplog.text
    both = "models:\n  - name: cartpole\n    version_policy: {specific: [1, 2]}\n"
    cfg.write_text(both)
    assert not manager._reload_config()  # first seen: not yet
    assert manager._reload_config()  # the same on the next poll: read
    assert manager.cfg.models[0].version_policy != before.models[0].version_policy
    with pytest.raises(ConfigError, match="empty"):  # at start-up alike
        cfg.write_text("# nothing yet\n")
        serving_config.load(cfg)
    cfg.write_text("{}\n")  # every default, said explicitly
    assert serving_config.load(cfg).models is None
