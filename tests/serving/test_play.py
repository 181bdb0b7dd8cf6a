"""rlplat serve: rlplat play through the server against rlplat eval of the same version."""

from __future__ import annotations

import json

from conftest import run_cli


def test_play_through_the_server_matches_eval_of_the_same_version(server, models, tmp_path):
    play = run_cli("play", "--server", server.base, "--model", "cartpole", "--env", "CartPole-v1",
                   "--episodes", "4", "--out", str(tmp_path / "play"), cwd=tmp_path)  # fmt: skip
    assert play.returncode == 0, play.stderr[-2000:]
    ev = run_cli("eval", str(models / "cartpole" / "2"), "--episodes", "4",
                 "--out", str(tmp_path / "eval"), cwd=tmp_path)  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-2000:]
    played = json.loads((tmp_path / "play" / "play.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert played["returns"] == evaluated["returns"]  # same seeds, same deterministic policy
    assert played["source"].startswith(f"server {server.base}/v1/models/cartpole")
    video = run_cli("play", "--server", server.base, "--model", "cartpole", "--env",
                    "CartPole-v1", "--episodes", "1", "--render", "video", "--format", "gif",
                    "--out", str(tmp_path / "video"), cwd=tmp_path)  # fmt: skip
    assert video.returncode == 0, video.stderr[-2000:]
    (gif,) = (tmp_path / "video" / "videos").glob("*.gif")
    assert gif.read_bytes()[:6] == b"GIF89a"


def test_play_errors_are_one_line(server, tmp_path):
    r = run_cli("play", "--server", "http://127.0.0.1:9", "--model", "cartpole",
                "--env", "CartPole-v1", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "cannot connect" in r.stderr
    assert len(r.stderr.splitlines()) == 1  # and no TensorFlow start-up noise: play is a client
    r = run_cli("play", "--server", server.base, "--model", "nope", "--env", "CartPole-v1",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "HTTP 404" in r.stderr and len(r.stderr.splitlines()) == 1
