"""rlplat serve's model manager against hostile or broken model directories: version names
(ASCII digits, as TF Serving parses them), listings that fail, symlinks leading out of the
base path, what a poll logs, and what status and metrics say once a version is gone.

The manager runs in-process and is polled by hand: each poll is one step, so nothing here
waits on the clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlplat.errors import UserError
from rlplat.export import export_saved_model, list_versions, parse_version, versions
from rlplat.serving.config import ServingConfig
from rlplat.serving.errors import NotFound
from rlplat.serving.metrics import ServingMetrics
from rlplat.serving.models import ModelManager
from rlplat.serving.rest import RestApp
from serving.helpers import export_tiny

GAUGE = "rlplat_serving_model_version_available"


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    """One exported version (staged/cartpole/1), copied into each test's base path."""
    base = tmp_path_factory.mktemp("staged")
    export_tiny(base, "cartpole", seed=1)
    return base / "cartpole" / "1"


@pytest.fixture(scope="module")
def policy(staged):
    """The staged version loaded back: a module `rlplat export` can write again."""
    import tensorflow as tf

    return tf.saved_model.load(str(staged))


def place(staged: Path, base: Path, *names: str) -> None:
    for name in names:
        shutil.copytree(staged, base / "cartpole" / name)


def manager(base: Path, **cfg) -> ModelManager:
    cfg = ServingConfig(batching={"enabled": False}, **cfg)
    m = ModelManager(base, cfg, None, ServingMetrics())
    m.start(watch=False)
    return m


def states(m: ModelManager, name: str = "cartpole") -> dict[int, str]:
    return {v: s.state for v, s in m.status(name)}


def said(caplog, words: str) -> int:
    return sum(words in r.getMessage() for r in caplog.records if r.name == "rlplat.serve")


def get(m: ModelManager, path: str) -> int:
    app = RestApp(m, m.metrics, 1 << 20)
    return asyncio.run(app.respond("GET", path, [], None))[0]


# ---------------------------------------------------------------------- version names


def test_versions_are_ascii_digits_and_the_last_sorting_name_wins(tmp_path):
    assert [parse_version(s) for s in ("0", "5", "0005", str(2**63 - 1))] == [0, 5, 5, 2**63 - 1]
    for bad in ("²", "٢", "²5", "-1", "+5", " 5", "5 ", "1.5", "", str(2**63)):
        assert parse_version(bad) is None, bad
    model = tmp_path / "m"
    for name in ("1", "0005", "5", "007", "²", "٢", "-3", "notes", ".tmp-export-9"):
        (model / name).mkdir(parents=True)
    (model / "9").write_text("a file is not a version")
    listing = list_versions(model)
    # As TF Serving's file-system source: names in sorted order, a later name for the same
    # number replaces an earlier one.
    assert listing.dirs == {1: "1", 5: "5", 7: "007"}
    assert versions(model) == [1, 5, 7]
    ignored = " ".join(listing.ignored)
    assert all(n in ignored for n in ("'²'", "'٢'", "'-3'", "'0005'")), ignored
    assert "notes" not in ignored and "tmp-export" not in ignored


def test_a_non_ascii_digit_directory_stops_nothing(staged, tmp_path, caplog):
    base = tmp_path / "models"
    place(staged, base, "1")
    (base / "cartpole" / "²").mkdir()  # "²".isdigit() is True, int("²") raises
    (base / "cartpole" / "٢").mkdir()  # int("٢") is 2
    caplog.set_level(logging.INFO, "rlplat.serve")
    m = manager(base)  # the server starts
    try:
        assert states(m) == {1: "AVAILABLE"}
        place(staged, base, "0003")  # and still loads new versions, from the name TF Serving would
        m.poll()
        m.poll()
        assert states(m)[3] == "AVAILABLE"
        with m.use("cartpole") as servable:
            assert servable.version == 3 and servable.path.name == "0003"
        for _ in range(3):
            m.poll()
        assert said(caplog, "ignoring '²'") == 1 and said(caplog, "ignoring '٢'") == 1
        assert not any(r.exc_info for r in caplog.records)
        # In a URL too: a 400, not a 500, and never version 2; leading zeros as TF Serving.
        assert get(m, "/v1/models/cartpole/versions/²") == 400
        assert get(m, "/v1/models/cartpole/versions/٢") == 400
        assert get(m, "/v1/models/cartpole/versions/" + "9" * 30) == 400
        assert get(m, "/v1/models/cartpole/versions/0000000000000000000003") == 200
    finally:
        m.stop()


def test_when_5_and_0005_both_exist_5_is_served(staged, tmp_path):
    base = tmp_path / "models"
    place(staged, base, "0005", "5")
    m = manager(base)
    try:
        with m.use("cartpole", 5) as servable:
            assert servable.path.name == "5"
    finally:
        m.stop()


def test_export_numbers_past_any_name_a_server_takes_for_a_version(policy, tmp_path):
    model = tmp_path / "models" / "cartpole"
    for name in ("²", "0007", "notes"):
        (model / name).mkdir(parents=True)
    assert export_saved_model(policy, tmp_path / "models", "cartpole", {}).name == "8"


def test_export_cannot_list_the_model_dir_is_one_line(policy, tmp_path, monkeypatch):
    model = tmp_path / "models" / "cartpole"
    model.mkdir(parents=True)
    unreadable(monkeypatch, model)
    with pytest.raises(UserError, match="cannot list its versions"):
        export_saved_model(policy, tmp_path / "models", "cartpole", {})


# ---------------------------------------------------------------------- failed listings


def unreadable(monkeypatch, path: Path) -> None:
    """os.scandir(path) fails as under `chmod 000` for a non-root user (tests run as root,
    whom the mode does not stop)."""
    real = os.scandir

    def scandir(p="."):
        if not isinstance(p, int) and os.path.realpath(p) == os.path.realpath(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real(p)

    monkeypatch.setattr(os, "scandir", scandir)


@contextlib.contextmanager
def out_of_fds() -> Iterator[None]:
    """Lower this process's open-file limit to its lowest free descriptor: the next
    open or scandir fails with EMFILE, as it did under 20k idle connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    free = os.open(os.devnull, os.O_RDONLY)
    os.close(free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("failure", ["model dir unreadable", "base path unreadable", "no fds"])
def test_a_failed_listing_keeps_what_is_loaded_and_is_logged_once(
    staged, tmp_path, caplog, monkeypatch, failure
):
    base = tmp_path / "models"
    place(staged, base, "1")
    m = manager(base)
    caplog.set_level(logging.INFO, "rlplat.serve")
    try:
        with pytest.MonkeyPatch.context() as mp:
            if failure == "no fds":
                with out_of_fds():
                    for _ in range(3):
                        m.poll()
            else:
                unreadable(mp, base / "cartpole" if failure.startswith("model") else base)
                for _ in range(3):
                    m.poll()
            assert states(m) == {1: "AVAILABLE"}
            with m.use("cartpole") as servable:
                assert servable.version == 1
        problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert problems and all("cannot list" in p for p in problems), problems
        assert len(problems) == len(set(problems)), problems  # 3 polls: each said once
        m.poll()
        assert said(caplog, "listed again") == len(problems) and states(m) == {1: "AVAILABLE"}
    finally:
        m.stop()


# ---------------------------------------------------------------------- confinement


def record_listings(monkeypatch) -> list[str]:
    """Every directory listed from now on, resolved."""
    listed: list[str] = []
    for fn in ("scandir", "listdir"):
        real = getattr(os, fn)

        def spy(p=".", _real=real):
            listed.append(str(p) if isinstance(p, int) else os.path.realpath(p))
            return _real(p)

        monkeypatch.setattr(os, fn, spy)
    return listed


def test_files_linked_out_of_the_base_path_are_refused_unread_and_logged_once(
    staged, tmp_path, caplog, monkeypatch
):
    base, outside = tmp_path / "models", tmp_path / "outside"
    place(staged, base, "1")
    shutil.copytree(staged, outside / "secret")
    for sub in ("a", "b/c"):
        (outside / "tree" / sub).mkdir(parents=True)  # stands for /usr
    v2 = base / "cartpole" / "2"  # a real directory whose files lead out
    v2.mkdir()
    (v2 / "saved_model.pb").symlink_to(outside / "secret" / "saved_model.pb")
    (v2 / "variables").symlink_to(outside / "secret" / "variables")
    (base / "cartpole" / "3").symlink_to(outside / "tree")  # a version that is a link out
    (base / "sneaky").symlink_to(outside)  # a model dir that is a link out
    caplog.set_level(logging.INFO, "rlplat.serve")
    listed = record_listings(monkeypatch)
    m = manager(base)
    try:
        for _ in range(5):
            m.poll()
        assert not [p for p in listed if p.startswith(str(outside))], listed
        status = dict(m.status("cartpole"))
        assert status[1].state == "AVAILABLE"
        for v in (2, 3):
            assert status[v].state == "END" and status[v].error_code == "PERMISSION_DENIED"
            assert "outside the model base path" in status[v].error_message
        with pytest.raises(NotFound):
            m.use("cartpole", 2).__enter__()
        assert not m.known("sneaky")
        for words in ("version 2 failed to load", "version 3 failed to load", "not serving sneaky"):
            assert said(caplog, words) == 1, words
    finally:
        m.stop()


def test_a_refused_version_is_retried_once_it_changes(staged, tmp_path):
    base, outside = tmp_path / "models", tmp_path / "outside"
    place(staged, base, "1")
    shutil.copytree(staged, outside / "2")
    (base / "cartpole" / "2").symlink_to(outside / "2")
    m = manager(base)
    try:
        m.poll()  # (start's second poll refused 2; then 1 is seen, then loaded)
        m.poll()
        assert states(m) == {2: "END", 1: "AVAILABLE"}
        (base / "cartpole" / "2").unlink()
        shutil.copytree(outside / "2", base / "cartpole" / "2")  # now it is inside
        for _ in range(3):
            m.poll()
        assert states(m)[2] == "AVAILABLE"
    finally:
        m.stop()


# ---------------------------------------------------------------------- status and metrics


def test_a_removed_version_is_end_in_status_and_leaves_the_gauge(staged, tmp_path):
    base = tmp_path / "models"
    place(staged, base, "1")
    m = manager(base)
    try:
        place(staged, base, "2")
        m.poll()  # seen once: START
        assert states(m) == {2: "START", 1: "AVAILABLE"}
        shutil.rmtree(base / "cartpole" / "2")  # gone before it loaded
        m.poll()
        assert states(m) == {2: "END", 1: "AVAILABLE"}

        place(staged, base, "3")  # a new version takes over; 1 is unloaded
        m.poll()
        m.poll()
        deadline = time.monotonic() + 30
        while states(m)[1] != "END":
            assert time.monotonic() < deadline, states(m)
            time.sleep(0.05)
        assert states(m) == {3: "AVAILABLE", 2: "END", 1: "END"}  # as TF Serving reports
        gauge = [ln for ln in m.metrics.render().decode().splitlines() if ln.startswith(GAUGE)]
        assert gauge == [f'{GAUGE}{{model="cartpole",version="3"}} 1.0'], gauge
    finally:
        m.stop()


def test_a_failing_poll_is_logged_once(staged, tmp_path, caplog, monkeypatch):
    base = tmp_path / "models"
    place(staged, base, "1")
    m = ModelManager(base, ServingConfig(poll_seconds=0.01))
    real, calls = m.poll, []

    def poll() -> None:
        calls.append(1)
        if len(calls) > 2:  # (start's two polls pass)
            raise RuntimeError("disk on fire")
        real()

    monkeypatch.setattr(m, "poll", poll)
    caplog.set_level(logging.INFO, "rlplat.serve")
    m.start()
    try:
        deadline = time.monotonic() + 30
        while len(calls) < 8:
            assert time.monotonic() < deadline, calls
            time.sleep(0.01)
    finally:
        m.stop()
    assert said(caplog, "model poll failed") == 1
