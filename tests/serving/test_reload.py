"""rlplat serve, versions: hot reload under load, rollback and labels through the config,
half-written versions."""

from __future__ import annotations

import os
import shutil

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
