"""A/B traffic: the routing function (statistics, stickiness), config refusals, and the
split, sticky keys, version answers, per-arm metrics and a ramp under load through REST and
gRPC."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import grpc
import numpy as np
import pytest
import requests
import scipy.stats

from rlplat.errors import ConfigError
from rlplat.serving import config as serving_config
from rlplat.serving.config import ModelEntry, ServingConfig
from rlplat.serving.models import ModelManager
from rlplat.serving.traffic import Split
from serving.helpers import OBS, Server, reference, series, states


def chi_square_p(counts: list[int], weights: list[float]) -> float:
    """The chi-square goodness-of-fit p-value of `counts` against `weights`. The keys here are
    fixed, so the outcome is deterministic; at p > 0.001 a correct router would fail once in
    a thousand key sets."""
    n, total = sum(counts), sum(weights)
    return scipy.stats.chisquare(counts, [n * w / total for w in weights]).pvalue


def split(traffic: dict, labels: dict | None = None) -> Split:
    return Split.of(ModelEntry(name="m", labels=labels or {}, traffic=traffic))


def test_keyed_split_matches_the_weights_and_keys_are_sticky():
    s = split({"stable": 70, "canary": 20, "3": 10}, {"stable": 1, "canary": 2})
    keys = [f"episode-{i}".encode() for i in range(12_000)]
    arms = [s.pick(k) for k in keys]
    counts = Counter(arms)
    assert chi_square_p([counts[i] for i in range(3)], [70, 20, 10]) > 0.001, counts
    assert s.versions == (1, 2, 3)
    assert [s.pick(k) for k in keys[:500]] == arms[:500]  # sticky
    # A ramp (canary 20 -> 50, stable 70 -> 40): keys only move onto the growing arm.
    ramped = split({"stable": 40, "canary": 50, "3": 10}, {"stable": 1, "canary": 2})
    moved = [(a, ramped.pick(k)) for k, a in zip(keys, arms, strict=True) if ramped.pick(k) != a]
    assert moved and all(old == 0 and new == 1 for old, new in moved)


def test_key_points_are_remembered_in_bounded_memory():
    from rlplat.serving import traffic

    traffic._POINTS.clear()
    long_key = b"x" * 60_000  # a header may be this long: its point is not kept
    assert traffic.key_point(long_key) == traffic.key_point(long_key)
    assert long_key not in traffic._POINTS
    for i in range(traffic._POINTS_MAX + 10):  # fresh short keys: the memo is emptied when full
        traffic.key_point(b"episode-%d" % i)
    assert 0 < len(traffic._POINTS) <= traffic._POINTS_MAX
    again = split({"1": 50, "2": 50})  # a point read back from the memo routes as a fresh one
    keys = [b"episode-%d" % i for i in range(traffic._POINTS_MAX + 5, traffic._POINTS_MAX + 10)]
    remembered = [again.pick(k) for k in keys]
    traffic._POINTS.clear()
    assert [again.pick(k) for k in keys] == remembered


def test_unkeyed_requests_split_per_request_and_zero_weight_arms_get_nothing():
    s = split({"1": 1, "2": 0, "3": 3})
    rng = random.Random(0)
    counts = Counter(s.pick(None, rng) for _ in range(10_000))
    assert counts[1] == 0
    assert chi_square_p([counts[0], counts[2]], [1, 3]) > 0.001, counts
    assert {s.pick(b"k%d" % i) for i in range(2000)} == {0, 2}


@pytest.mark.parametrize(
    "traffic, words",
    [
        ("{stable: 1, nosuch: 1}", "'nosuch' is neither a label"),
        ("{stable: -1, canary: 2}", "weights must be >= 0"),
        ("{stable: 0, canary: 0}", "all weights are zero"),
        ("{}", "all weights are zero"),
        ("{stable: 1.0e308, canary: 1.0e308}", "the weights' sum overflows"),
        ("{stable: 10, stable: 90}", "duplicate key 'stable'"),
    ],
)
def test_bad_traffic_is_refused_in_one_line(tmp_path, traffic, words):
    cfg = tmp_path / "serving.yaml"
    cfg.write_text(
        f"models:\n  - name: m\n    labels: {{stable: 1, canary: 2}}\n    traffic: {traffic}\n"
    )
    with pytest.raises(ConfigError, match=words) as err:
        serving_config.load(cfg)
    assert "\n" not in str(err.value)


def test_an_arm_that_is_not_served_is_refused(models):
    entry = {"name": "cartpole", "traffic": {"1": 1, "7": 1}, "version_policy": {"all": True}}
    with pytest.raises(ConfigError, match="arm '7' is version 7"):
        ModelManager(models, ServingConfig(models=[ModelEntry(**entry)]))
    pinned = {**entry, "traffic": {"1": 1, "2": 1}, "version_policy": {"specific": [2]}}
    with pytest.raises(ConfigError, match="arm '1' is version 1"):
        ModelManager(models, ServingConfig(models=[ModelEntry(**pinned)]))


# ---------------------------------------------------------------------- through the server

SPLIT = """models:
  - name: cartpole
    version_policy: {{specific: [1, 2]}}
    labels: {{stable: 1, canary: 2}}
    traffic: {traffic}
"""


@pytest.fixture(scope="module")
def ab(models, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("ab") / "serving.yaml"
    cfg.write_text(SPLIT.format(traffic="{stable: 50, canary: 50}"))
    server = Server(models, "--config", str(cfg))
    server.cfg = cfg
    yield server
    server.stop()


def reconfigure(server: Server, text: str, outcome: str = "serving config reloaded") -> None:
    """Write the config and wait until the server logged `outcome` once more."""
    before = server.log.read_text().count(outcome)
    server.cfg.write_text(text)
    deadline = time.monotonic() + 60
    while server.log.read_text().count(outcome) == before:
        assert time.monotonic() < deadline, server.log.read_text()[-2000:]
        time.sleep(0.05)


def rest_predict(server: Server, key: str | None, path: str = "") -> tuple[int, np.ndarray]:
    headers = {"X-Rlplat-Route": key} if key is not None else {}
    r = server.post(f"/v1/models/cartpole{path}:predict", {"inputs": OBS.tolist()},
                    headers=headers)  # fmt: skip
    assert r.status_code == 200, r.text
    return int(r.headers["X-Rlplat-Version"]), np.array(r.json()["outputs"]["q_values"])


def grpc_predict(stub, key: str | None, version: int | None = None) -> tuple[int, np.ndarray]:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = "cartpole"
    if version is not None:
        req.model_spec.version.value = version
    req.inputs["observations"].CopyFrom(tf.make_tensor_proto(OBS))
    metadata = [("x-rlplat-route", key)] if key is not None else []
    resp = stub.Predict(req, timeout=10, metadata=metadata)
    return resp.model_spec.version.value, tf.make_ndarray(resp.outputs["q_values"])


def test_split_sticky_keys_and_bypass_over_rest_and_grpc(ab, models):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    want = {v: reference(models / "cartpole" / str(v), OBS)["q_values"] for v in (1, 2)}
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{ab.grpc_port}")
    )
    for call in (lambda k: rest_predict(ab, k), lambda k: grpc_predict(stub, k)):
        seen = {}
        for i in range(150):  # keyed: each key's version, and the answer is that version's
            version, q = call(f"ep-{i}")
            np.testing.assert_allclose(q, want[version], rtol=1e-5)
            seen[f"ep-{i}"] = version
        assert set(seen.values()) == {1, 2}
        assert all(call(k)[0] == v for k, v in list(seen.items())[:30])  # sticky
        assert {call(None)[0] for _ in range(60)} == {1, 2}  # unkeyed: per request
    # The REST and gRPC front ends route a key alike (one router in the model manager).
    assert all(grpc_predict(stub, k)[0] == rest_predict(ab, k)[0] for k in list(seen)[:20])
    # Naming a version or a label bypasses the split.
    for i in range(20):
        assert rest_predict(ab, f"ep-{i}", "/versions/1")[0] == 1
        assert rest_predict(ab, f"ep-{i}", "/labels/canary")[0] == 2
        assert grpc_predict(stub, f"ep-{i}", version=1)[0] == 1
    r = ab.post("/v1/models/cartpole:predict", {"inputs": OBS.tolist()})
    assert r.headers["X-Rlplat-Arm"] in ("stable", "canary")
    bad = ab.post("/v1/models/cartpole:predict", {"inputs": [[1.0]]},
                  headers={"X-Rlplat-Route": "ep-0"})  # fmt: skip
    assert bad.status_code == 400
    metrics = ab.get("/metrics").text
    arm0 = "stable" if seen["ep-0"] == 1 else "canary"  # errors are counted by arm too
    assert series(metrics, "rlplat_serving_requests_total", arm=arm0, code="400") == 1
    for api in ("rest", "grpc"):
        for arm, version in (("stable", 1), ("canary", 2)):
            assert (f'rlplat_serving_requests_total{{api="{api}",arm="{arm}",code='
                    f'"{200 if api == "rest" else "OK"}",method="predict",model="cartpole",'
                    f'version="{version}"}}' in metrics), metrics  # fmt: skip
    assert series(metrics, "rlplat_serving_request_latency_seconds_count", arm="canary") > 0
    # Requests that named a version bypassed the split: counted with an empty arm.
    assert series(metrics, "rlplat_serving_requests_total", arm="", version="1") >= 20


class KeyedHammer(threading.Thread):
    """A client playing episodes of 5 requests, each episode with a new routing key; every
    answer must be a 200."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.versions, self.failures = server, Counter(), []
        self.stopping = threading.Event()

    def run(self) -> None:
        session, i = requests.Session(), 0
        while not self.stopping.is_set():
            i += 1
            for _ in range(5):
                try:
                    r = session.post(self.server.base + "/v1/models/cartpole:predict",
                                     json={"inputs": OBS.tolist()},
                                     headers={"X-Rlplat-Route": f"h-{i}"}, timeout=10)  # fmt: skip
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    self.versions[int(r.headers["X-Rlplat-Version"])] += 1

    def share_now(self, n: int = 100) -> dict[int, int]:
        """The versions of the next n answers (after the one in flight now, which may have
        been routed before the last edit was in force)."""
        deadline = time.monotonic() + 120
        seen = sum(self.versions.values())
        while sum(self.versions.values()) < seen + 2 and not self.failures:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        start = self.versions.copy()
        while sum((self.versions - start).values()) < n and not self.failures:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return dict(self.versions - start)


def test_ramp_and_rollback_under_load_fail_nothing_and_bad_edits_keep_the_routing(ab):
    hammer = KeyedHammer(ab)
    hammer.start()
    try:
        for canary in (1, 10, 50, 100, 0):  # ramp, then roll back
            reconfigure(ab, SPLIT.format(traffic=f"{{stable: {100 - canary}, canary: {canary}}}"))
            share = hammer.share_now()
            if canary == 100:
                assert share.keys() == {2}, share
            if canary == 0:
                assert share.keys() == {1}, share
        for bad in ("{stable: 1, nosuch: 1}", "{stable: 0, canary: 0}", "{stable: -1}",
                    "{stable: 1, 7: 1}"):  # fmt: skip
            reconfigure(ab, SPLIT.format(traffic=bad), "serving config not reloaded")
            assert hammer.share_now(30).keys() == {1}  # the rolled-back routing stays
    finally:
        hammer.stopping.set()
        hammer.join(timeout=20)
    assert hammer.failures == [], hammer.failures[:3]
    refusals = [line for line in ab.log.read_text().splitlines() if "not reloaded" in line]
    assert len(refusals) >= 4 and any("version 7" in line for line in refusals), refusals


# ---------------------------------------------------------------------- shadow


def test_agreement_compares_actions_or_else_every_output():
    from rlplat.serving.shadow import agree

    a, b = np.array([1, 0]), np.array([1, 1])
    assert agree({"actions": a, "q": np.zeros(2)}, {"actions": a.copy(), "q": np.ones(2)})
    assert not agree({"actions": a}, {"actions": b})
    assert not agree({"q": np.zeros(2)}, {"q": np.ones(2)})


def test_a_shadow_that_fails_is_counted_as_an_error(models):
    from rlplat.serving.metrics import ServingMetrics
    from rlplat.serving.shadow import Copy

    metrics = ServingMetrics()
    manager = ModelManager(models, ServingConfig(), metrics=metrics)  # nothing loaded
    manager.shadow.run([Copy("cartpole", 2, "serving_default", {"observations": OBS}, {})] * 2)
    text = metrics.render().decode()
    assert series(text, "rlplat_serving_shadow_requests_total", result="error", version="2") == 2


def test_a_shadow_copy_is_checked_as_a_request_to_its_version(models):
    """The shadow version may take other inputs than the version that answered: a copy it
    would refuse as a request (width, dtype, name) counts as an error, not as `ok`."""
    from rlplat.serving.metrics import ServingMetrics
    from rlplat.serving.shadow import Copy

    metrics = ServingMetrics()
    manager = ModelManager(models, ServingConfig(models=[ModelEntry(name="cartpole")]),
                           metrics=metrics)  # fmt: skip
    manager.start(watch=False)
    try:
        answered = reference(models / "cartpole" / "2", OBS)
        bad = [{"observations": np.zeros((len(OBS), 8), np.float32)},
               {"observations": OBS.astype(np.float64)}, {"x": OBS}]  # fmt: skip
        group = [Copy("cartpole", 2, "serving_default", inputs, answered)
                 for inputs in [*bad, {"observations": OBS}]]  # fmt: skip
        manager.shadow.run(group)
    finally:
        manager.stop()
    text = metrics.render().decode()
    assert series(text, "rlplat_serving_shadow_requests_total", result="error") == 3
    assert series(text, "rlplat_serving_shadow_requests_total", result="ok") == 1
    assert series(text, "rlplat_serving_shadow_agreement_total", agree="true") == 1


def test_the_shadow_queue_is_bounded_in_bytes():
    """Copies of big requests fill memory long before a count bound: beyond max_bytes
    queued, a copy is dropped (counted) and the bytes come back as copies are taken."""
    import contextlib

    from rlplat.serving.shadow import Copy, ShadowRunner

    release, taken = threading.Event(), threading.Event()

    class Blocked:
        @contextlib.contextmanager
        def use(self, name, version=None, label=None):
            taken.set()
            release.wait(30)
            raise RuntimeError("not loaded")  # every run ends as an error
            yield

    results: list[str] = []
    runner = ShadowRunner(Blocked(), None, max_bytes=3 << 20)
    runner._record = lambda copy, result, seconds, agreed: results.append(result)
    one_mib = {"observations": np.zeros((1 << 18,), np.float32)}  # 1 MiB
    copy = Copy("m", 2, "serving_default", one_mib, {})
    runner.submit(copy)  # taken by the thread at once, which then waits
    assert taken.wait(30)
    for _ in range(5):  # three fit, two do not
        runner.submit(copy)
    assert results == ["dropped", "dropped"]
    release.set()
    deadline = time.monotonic() + 30
    while results.count("error") < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert results.count("error") == 4 and runner._queued_bytes == 0


def test_the_shadow_never_changes_an_answer_nor_delays_it(ab, models):
    reconfigure(ab, SPLIT.format(traffic="{stable: 100}") + "    shadow: canary\n")
    want = reference(models / "cartpole" / "1", OBS)["q_values"]
    shadowed, plain = [], []
    for i in range(150):  # interleaved: the same machine load for both kinds
        t0 = time.perf_counter()
        version, q = rest_predict(ab, f"s-{i}")
        shadowed.append(time.perf_counter() - t0)
        assert version == 1
        np.testing.assert_allclose(q, want, rtol=1e-5)
        t0 = time.perf_counter()
        assert rest_predict(ab, None, "/versions/1")[0] == 1  # pinned: no shadow copy
        plain.append(time.perf_counter() - t0)
    # Loose (a busy machine): the shadow runs in its own thread after each answer.
    assert np.median(shadowed) < 2 * np.median(plain) + 0.01, (np.median(shadowed),
                                                                np.median(plain))  # fmt: skip
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{ab.grpc_port}")
    )
    for i in range(30):  # gRPC: mirrored once the RPC is done; the answer is version 1's
        version, q = grpc_predict(stub, f"s-{i}")
        assert version == 1
        np.testing.assert_allclose(q, want, rtol=1e-5)
    deadline = time.monotonic() + 60
    while True:
        metrics = ab.get("/metrics").text
        ok = series(metrics, "rlplat_serving_shadow_requests_total", version="2", result="ok")
        if ok >= 180:
            break
        assert time.monotonic() < deadline, metrics
        time.sleep(0.1)
    agreement = series(metrics, "rlplat_serving_shadow_agreement_total", version="2")
    assert agreement == ok
    assert series(metrics, "rlplat_serving_shadow_latency_seconds_count", version="2") == ok
    assert series(metrics, "rlplat_serving_shadow_requests_total", result="error") == 0


def test_queued_shadow_copies_run_as_one_batch_with_each_ones_agreement(models):
    from rlplat.serving.metrics import ServingMetrics
    from rlplat.serving.shadow import Copy

    metrics = ServingMetrics()
    manager = ModelManager(models, ServingConfig(models=[ModelEntry(name="cartpole")]),
                           metrics=metrics)  # fmt: skip
    manager.start(watch=False)
    try:
        want = reference(models / "cartpole" / "2", OBS)
        same = {k: v[:1] for k, v in want.items()}
        other = {**same, "actions": 1 - same["actions"]}
        group = [Copy("cartpole", 2, "serving_default", {"observations": OBS[:1]}, a)
                 for a in (same, other, same)]  # fmt: skip
        manager.shadow.run(group)
    finally:
        manager.stop()
    text = metrics.render().decode()
    assert series(text, "rlplat_serving_shadow_agreement_total", agree="true") == 2
    assert series(text, "rlplat_serving_shadow_agreement_total", agree="false") == 1
    assert series(text, "rlplat_serving_batch_size_count") == 0  # not through the batcher


# ---------------------------------------------------------------------- play --compare-arms


def test_play_compares_arms_one_routing_key_per_episode(ab, tmp_path):
    import json

    from conftest import run_cli

    reconfigure(ab, SPLIT.format(traffic="{stable: 50, canary: 50}"))

    def play(*args: str) -> tuple[dict, str]:
        out = tmp_path / "-".join(args or ("arms",))
        r = run_cli("play", "--server", ab.base, "--model", "cartpole", "--env", "CartPole-v1",
                    "--episodes", "8", "--out", str(out), *args, cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads((out / "play.json").read_text()), r.stdout

    record, stdout = play("--compare-arms")
    versions = record["episode_versions"]
    assert len(versions) == 8 and set(versions) == {"1", "2"}, versions
    assert set(record["episode_arms"]) == {"stable", "canary"}
    # Each episode was played by the version it records: same seeds, deterministic policies.
    pinned = {v: play("--version", v)[0]["returns"] for v in ("1", "2")}
    assert record["returns"] == [pinned[v][i] for i, v in enumerate(versions)]
    arms = {a["arm"]: a for a in record["arms"]}
    named = [f"{a} (version {v})" for a, v in zip(record["episode_arms"], versions, strict=True)]
    assert {a: arms[a]["episodes"] for a in arms} == dict(Counter(named))
    assert {a.split(" (")[0] for a in arms} == {"stable", "canary"}  # the split's own names
    assert "Welch" in stdout and "95% CI" in stdout and "no A/B split" not in stdout
    # plain play says which version answered, on screen and in play.json
    plain, stdout = play("--version", "2")
    assert plain["versions_answered"] == [2]
    assert "answered by: model cartpole version 2" in stdout
    # --compare-arms against a model without a split says so
    reconfigure(ab, "models:\n  - name: cartpole\n")
    try:
        record, stdout = play("--compare-arms")
    finally:  # as the module's other tests expect it: both versions serving, split 50/50
        reconfigure(ab, SPLIT.format(traffic="{stable: 50, canary: 50}"))
        ab.wait_status("/v1/models/cartpole", lambda s: set(states(s).values()) == {"AVAILABLE"}
                       and len(states(s)) == 2)  # fmt: skip
    assert "note: model cartpole has no A/B split on this server" in stdout
    assert set(record["episode_arms"]) == {""}


def test_every_documented_rest_endpoint_answers_as_documented(ab):
    """rest.ENDPOINTS is what the API reference lists: each row, with a model that has
    versions 1 and 2 and labels, answers 200."""
    from rlplat.serving.rest import ENDPOINTS

    for method, path, _ in ENDPOINTS:
        url = path.replace("NAME", "cartpole").replace("/V", "/1").replace("/L", "/stable")
        r = ab.get(url) if method == "GET" else ab.post(url, {"instances": OBS.tolist()})
        assert r.status_code == 200, (method, url, r.text[:200])
