from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from rlplat.logging import TensorBoardLogger, truncate_events


def read(logdir: Path) -> list[tuple[str, int]]:
    """Every scalar's (tag, step), files in the order they were written: by their first
    scalar's wall time, not by name (in files named in the same second, a writer counter of
    10 sorts before 9)."""
    files = []
    for path in logdir.glob("events.out.tfevents.*"):
        events = list(EventFileLoader(str(path)).Load())
        times = [e.wall_time for e in events if e.summary.value]
        files.append((min(times, default=0.0), events))
    out = []
    for _, events in sorted(files, key=lambda f: f[0]):
        for event in events:
            out += [(v.tag, event.step) for v in event.summary.value]
    return out


def test_truncate_drops_only_events_after_the_checkpoint(tmp_path: Path):
    tb = TensorBoardLogger(tmp_path)
    for step in range(1, 11):
        tb.scalars({"a": step, "b": -step}, step)
    tb.close()
    assert truncate_events(tmp_path, 6) == 8  # 4 steps x 2 tags
    assert read(tmp_path) == [(t, s) for s in range(1, 7) for t in ("a", "b")]
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    # A resumed writer continues after the kept events.
    tb = TensorBoardLogger(tmp_path)
    tb.scalars({"a": 7.0}, 7)
    tb.close()
    assert [s for t, s in read(tmp_path) if t == "a"] == [1, 2, 3, 4, 5, 6, 7]


def test_truncate_without_later_events_leaves_files_alone(tmp_path: Path):
    tb = TensorBoardLogger(tmp_path)
    tb.scalars({"a": 1.0}, 1)
    tb.close()
    before = sorted(tmp_path.iterdir())
    assert truncate_events(tmp_path, 5) == 0
    assert sorted(tmp_path.iterdir()) == before
    assert truncate_events(tmp_path / "missing", 5) == 0
