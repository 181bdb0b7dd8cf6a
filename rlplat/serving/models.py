"""Model versions under a base path: discovery, loading, warm-up, hot swap, status.

Each version is loaded the way TF Serving loads a SavedModel: a TF1 Session over the
MetaGraphDef tagged `serve`, its SignatureDefs naming the tensors to feed and fetch, so the
export stays the contract (what TF Serving would serve is what rlplat serves). A version
directory is loaded only after two polls see the same files (a half-written copy is still
changing); a load or warm-up that fails marks that version END with the error in its status
and is retried only when its files change; the versions already serving stay. A new version
takes traffic only once loaded and warmed up; the old one leaves once no request holds it.

Every file a version loads must resolve inside the base path: a path that leads out is refused
before anything under it is read or walked. A directory that cannot be listed keeps what is
loaded. A poll runs every 0.2 s, so each problem it finds is logged once, until it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rlplat.errors import ConfigError
from rlplat.export import list_versions, versions
from rlplat.serving import config as serving_config
from rlplat.serving.config import NAME_RE, ModelEntry, ServingConfig
from rlplat.serving.errors import NotFound, ServingError
from rlplat.serving.servable import Servable
from rlplat.serving.shadow import ShadowRunner
from rlplat.serving.traffic import UNSPLIT, Routed, Split

if TYPE_CHECKING:
    from rlplat.serving.metrics import ServingMetrics

log = logging.getLogger("rlplat.serve")

# Version states, as in TF Serving's ModelVersionStatus.State.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class VersionStatus:
    state: str
    error_code: str = "OK"  # a tensorflow.error.Code name
    error_message: str = ""

    @property
    def error_code_number(self) -> int:
        from tensorflow.core.protobuf import error_codes_pb2

        return error_codes_pb2.Code.Value(self.error_code)


@dataclass
class _Model:
    entry: ModelEntry
    path: Path
    loaded: dict[int, Servable] = field(default_factory=dict)
    status: dict[int, VersionStatus] = field(default_factory=dict)
    sighted: dict[int, tuple] = field(default_factory=dict)  # version -> files at last poll
    failed: dict[int, tuple] = field(default_factory=dict)  # version -> files that failed
    dirs: dict[int, str] = field(default_factory=dict)  # version -> its directory's name
    split: Split | None = None  # the entry's traffic split (rlplat/serving/traffic.py)


OUTSIDE = "resolves outside the model base path"


def inside(path: str, base: str) -> bool:
    """Whether the resolved `path` is `base` or under it (both already resolved)."""
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def fingerprint(path: Path, base: Path) -> tuple:
    """The files under a version directory, symlinks followed, as (relative path, size, mtime,
    inode): equal on two polls means nothing is still writing it. An entry that resolves
    outside `base` is recorded as (relative path, OUTSIDE, target) and never entered, so a
    version linked to /usr costs one realpath per poll, not a walk of /usr."""
    items: list[tuple] = []
    seen: set[str] = set()
    stack = [(str(path), "")]
    while stack:
        p, rel = stack.pop()
        real = os.path.realpath(p)
        if not inside(real, str(base)):
            items.append((rel or ".", OUTSIDE, real))
            continue
        try:
            st = os.stat(real)
        except OSError:
            continue  # gone since the listing: the next poll sees the change
        if not stat.S_ISDIR(st.st_mode):
            items.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
        elif real not in seen:  # (a directory reached twice, or a link cycle: once)
            seen.add(real)
            try:
                names = sorted(os.listdir(real), reverse=True)
            except OSError as exc:
                items.append((rel or ".", "unreadable", exc.strerror))
                continue
            stack.extend((os.path.join(p, n), os.path.join(rel, n)) for n in names)
    return tuple(sorted(items, key=lambda item: item[0]))  # (each path is there once)


class SayOnce:
    """Logs each problem a poll finds when first seen and again only once its message
    changed: the poll runs 5x a second and must not flood the log."""

    def __init__(self) -> None:
        self._said: dict[Hashable, str] = {}

    def __call__(self, key: Hashable, message: str, level: int = logging.ERROR, **kw) -> None:
        if self._said.get(key) != message:
            self._said[key] = message
            log.log(level, "%s", message, **kw)

    def clear(self, key: Hashable, message: str | None = None) -> None:
        """The problem is gone: say so (if given), and say it again should it come back."""
        if self._said.pop(key, None) is not None and message:
            log.info("%s", message)

    def retain(self, keep: Callable[[Hashable], bool]) -> None:
        self._said = {k: m for k, m in self._said.items() if keep(k)}


class ModelManager:
    """Serves every model under `base_path` (or those in the serving config), keeps the
    loaded versions in step with the directories and the config, and resolves requests."""

    def __init__(
        self,
        base_path: Path,
        cfg: ServingConfig,
        config_path: Path | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.base_path = Path(base_path).resolve()
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics
        self.loop: asyncio.AbstractEventLoop | None = None  # where batches run (the server's)
        self._config_read = _file_key(config_path)  # the file as last read
        self._config_seen = self._config_read  # ... and as the last poll saw it
        self._models: dict[str, _Model] = {}
        self._lock = threading.RLock()
        self._say = SayOnce()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.shadow = ShadowRunner(self, metrics)  # copies of split requests to a shadow arm
        self._check_paths(cfg)

    # ------------------------------------------------------------------ lifecycle

    def start(self, watch: bool = True) -> None:
        """Load what is there now (two polls apart), then keep watching in a thread."""
        self.poll()
        time.sleep(min(self.cfg.poll_seconds, 0.2))
        self.poll()
        if watch:
            self._thread = threading.Thread(target=self._watch, name="rlplat-models", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for model in self._models.values():
                for servable in model.loaded.values():
                    servable.close()
                model.loaded.clear()

    def _watch(self) -> None:
        while not self._stop.wait(self.cfg.poll_seconds):
            try:
                reloaded = self._reload_config()
                self.poll()
                if reloaded:  # (said once the poll has put it in force: labels, splits)
                    log.info("serving config reloaded from %s", self.config_path)
            except Exception as exc:  # noqa: BLE001  (the watcher must outlive any one bad poll)
                self._say(("poll",), f"model poll failed: {exc!r}", exc_info=True)
            else:
                self._say.clear(("poll",), "model poll works again")

    # ------------------------------------------------------------------ config

    def _check_paths(self, cfg: ServingConfig) -> None:
        for entry in cfg.models or []:
            self._check_arms(entry, self._model_path(entry))

    def _check_arms(self, entry: ModelEntry, path: Path) -> None:
        """A split may only name versions this entry serves: on disk (now) and chosen by its
        version_policy; otherwise its traffic would silently go elsewhere."""
        arms = [*(entry.traffic or {}), *([entry.shadow] if entry.shadow is not None else [])]
        if not arms:
            return
        try:
            served = entry.version_policy.select(sorted(list_versions(path).dirs))
        except OSError as exc:
            raise ConfigError(f"models.{entry.name}: cannot list its versions ({exc})") from None
        for arm in arms:
            version = entry.arm_version(arm)
            if version not in served:
                where = f"{self.config_path}: " if self.config_path is not None else ""
                raise ConfigError(
                    f"{where}models.{entry.name}.traffic: arm '{arm}' is version {version}, "
                    f"which is not among the versions served ({served})"
                )

    def _model_path(self, entry: ModelEntry) -> Path:
        path = (self.base_path / (entry.base_path or entry.name)).resolve()
        if not path.is_relative_to(self.base_path):
            raise ConfigError(
                f"models.{entry.name}.base_path: {entry.base_path} is outside the model base "
                f"path {self.base_path}"
            )
        return path

    def _reload_config(self) -> bool:
        """Whether a changed, valid config was read (the next poll puts it in force)."""
        if self.config_path is None:
            return False
        key = _file_key(self.config_path)
        # Read only a file that two polls saw alike: an editor that truncates and then
        # writes (or a copy in progress) is not read half-way.
        settled = key == self._config_seen
        self._config_seen = key
        if key == self._config_read or not settled:
            return False
        self._config_read = key
        try:
            cfg = serving_config.load(self.config_path)
            self._check_paths(cfg)
        except ConfigError as exc:
            log.error("serving config not reloaded, the previous one stays: %s", exc)
            return False
        with self._lock:
            self.cfg = self.cfg.model_copy(update={"models": cfg.models})
        return True

    def _entries(self) -> list[ModelEntry]:
        """The models to serve: the config's, or each directory under the base path that
        has versions (or that cannot be listed now but was served: it stays)."""
        if self.cfg.models is not None:
            return list(self.cfg.models)
        try:
            with os.scandir(self.base_path) as it:
                names = sorted(e.name for e in it if NAME_RE.fullmatch(e.name) and e.is_dir())
        except OSError as exc:
            self._say(("base",), f"cannot list the model base path ({exc}): the models stay")
            return [model.entry for model in self._models.values()]
        self._say.clear(("base",), f"the model base path {self.base_path} is listed again")
        entries = []
        for name in names:
            entry = ModelEntry(name=name)
            try:  # (a directory leading out of the base path is refused before it is read)
                has_versions = bool(versions(self._model_path(entry)))
            except (ConfigError, OSError):
                has_versions = True  # poll() and _sync() say what is wrong
            if has_versions:
                entries.append(entry)
        return entries

    # ------------------------------------------------------------------ polling

    def poll(self) -> None:
        """One pass: bring every model's loaded versions in line with disk and config."""
        paths = {}
        entries = {entry.name: entry for entry in self._entries()}
        for entry in entries.values():
            try:
                paths[entry.name] = (entry, self._model_path(entry))
            except ConfigError as exc:  # a symlinked model dir leading out of the base
                self._say(("refused", entry.name), f"not serving {entry.name}: {exc}")
            else:
                self._say.clear(("refused", entry.name), f"model {entry.name} is in the base path")
        with self._lock:
            for name in list(self._models):
                if name not in paths:
                    model = self._models.pop(name)
                    for version in list(model.loaded):
                        self._retire(model, version)
            for name, (entry, path) in paths.items():
                model = self._models.get(name)
                if model is None:
                    model = self._models[name] = _Model(entry, path)
                model.entry, model.path, model.split = entry, path, Split.of(entry)
        self._say.retain(lambda key: key[0] not in ("refused", "list") or key[1] in entries)
        for name in paths:
            self._sync(self._models[name])

    def _sync(self, model: _Model) -> None:
        name = model.entry.name
        try:
            listing = list_versions(model.path)
        except OSError as exc:  # not "no versions": keep serving what is loaded
            self._say(("list", name), f"model {name}: cannot list its versions ({exc}); "
                      f"the {len(model.loaded)} loaded version(s) stay")  # fmt: skip
            return
        self._say.clear(("list", name), f"model {name}: its versions are listed again")
        for why in listing.ignored:
            self._say(("ignored", name, why), f"model {name}: ignoring {why}", logging.WARNING)
        self._say.retain(lambda key: key[0] != "ignored" or key[1] != name
                         or key[2] in listing.ignored)  # fmt: skip
        model.dirs = listing.dirs
        on_disk = sorted(listing.dirs)
        for v in list(model.failed):  # a failed version is retried once its files change
            if v not in listing.dirs or self._fingerprint(model, v) != model.failed[v]:
                del model.failed[v]
        policy = model.entry.version_policy
        wanted = policy.select([v for v in on_disk if v not in model.failed])
        for version in sorted(set(wanted) - set(model.loaded), reverse=True):
            self._try_load(model, version)
        wanted = policy.select([v for v in on_disk if v not in model.failed])
        # Availability first: old versions leave only once every wanted one has settled.
        if all(v in model.loaded for v in wanted):
            for version in sorted(set(model.loaded) - set(wanted)):
                self._retire(model, version)
        for version in list(model.sighted):
            if version not in wanted:
                del model.sighted[version]
        for version, status in list(model.status.items()):  # seen once, then gone or unwanted
            if status.state == START and version not in model.sighted:
                self._set(model, version, VersionStatus(END))

    def _fingerprint(self, model: _Model, version: int) -> tuple:
        return fingerprint(model.path / model.dirs[version], self.base_path)

    def _try_load(self, model: _Model, version: int) -> None:
        path = model.path / model.dirs[version]
        files = self._fingerprint(model, version)
        if model.sighted.get(version) != files:
            model.sighted[version] = files  # still changing, or new: look again next poll
            if model.status.get(version, VersionStatus(END)).state == END:
                self._set(model, version, VersionStatus(START))
            return
        self._set(model, version, VersionStatus(LOADING))
        started = time.perf_counter()
        try:
            escapes = [f"{os.path.normpath(path / rel)} {OUTSIDE} ({to[0]})"
                       for rel, kind, *to in files if kind == OUTSIDE]  # fmt: skip
            if escapes:  # refused before TensorFlow reads a byte
                raise PermissionError(escapes[0])
            if not (path / "saved_model.pb").is_file():
                raise FileNotFoundError(f"no saved_model.pb in {path}")
            servable = Servable(model.entry.name, version, path, self.cfg)
            try:
                servable.warm_up()
                if self._fingerprint(model, version) != files:  # (a link swapped meanwhile too)
                    raise RuntimeError("files changed while loading")
            except BaseException:
                servable.close()
                raise
        except Exception as exc:  # noqa: BLE001  (any failure: report it, keep serving)
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            model.failed[version] = files
            code = "PERMISSION_DENIED" if isinstance(exc, PermissionError) else "UNKNOWN"
            self._set(model, version, VersionStatus(END, code, message))
            log.error("model %s version %d failed to load: %s", model.entry.name, version, message)
            if self.metrics is not None:
                self.metrics.load(model.entry.name, "error")
            return
        servable.enable_batching(
            self.cfg,
            self.loop,
            (lambda sig: self.metrics.batch_hook(model.entry.name, version, sig))
            if self.metrics is not None
            else None,
        )
        with self._lock:
            model.loaded[version] = servable
            self._set(model, version, VersionStatus(AVAILABLE))
        del model.sighted[version]
        log.info(
            "model %s version %d available (%.0f ms)",
            model.entry.name, version, 1000 * (time.perf_counter() - started),
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.load(model.entry.name, "ok")

    def _set(self, model: _Model, version: int, status: VersionStatus) -> None:
        with self._lock:
            model.status[version] = status
        if self.metrics is not None:
            self.metrics.state(model.entry.name, version, status.state)

    def _retire(self, model: _Model, version: int) -> None:
        """Stop routing to a version now; close it once the requests holding it are done."""
        with self._lock:
            servable = model.loaded.pop(version, None)
            if servable is None:
                return
            self._set(model, version, VersionStatus(UNLOADING))

        def close() -> None:
            deadline = time.monotonic() + 60
            while servable.in_flight > 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            servable.close()
            with self._lock:
                if model.status.get(version, VersionStatus(END)).state == UNLOADING:
                    self._set(model, version, VersionStatus(END))

        threading.Thread(target=close, name=f"rlplat-unload-{version}", daemon=True).start()

    # ------------------------------------------------------------------ requests

    def known(self, name: str) -> bool:
        return name in self._models

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"Servable not found for request: Latest({name})")
        return model

    def _version(self, model: _Model, version: int | None, label: str | None) -> int:
        name = model.entry.name
        if label is not None:
            if label not in model.entry.labels:
                raise NotFound(f"Unrecognized servable version label: {label} (model {name})")
            version = model.entry.labels[label]
        if version is None:
            if not model.loaded:
                raise NotFound(f"Servable not found for request: Latest({name})")
            return max(model.loaded)
        return version

    def _arm(self, model: _Model, key: bytes | None) -> tuple[int | None, Routed]:
        """A split model's version and arm for an unpinned request (rlplat/serving/traffic.py);
        an arm that is not loaded now falls back to the latest version."""
        split = model.split
        if split is None:
            return None, UNSPLIT
        i = split.pick(key)
        version = split.versions[i]
        return (version if version in model.loaded else None), split.routes[i]

    @contextlib.contextmanager
    def use(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Iterator[Servable]:
        """The servable a request names, held (not unloaded) until the block ends."""
        with self.use_routed(name, version, label) as (servable, _):
            yield servable

    @contextlib.contextmanager
    def use_routed(
        self,
        name: str,
        version: int | None = None,
        label: str | None = None,
        key: bytes | None = None,
    ) -> Iterator[tuple[Servable, Routed]]:
        """As `use`, and a request naming neither version nor label goes through the model's
        traffic split (sticky by routing `key`); yields the servable and how it was routed."""
        with self._lock:
            model = self._model(name)
            routed = UNSPLIT
            if version is None and label is None:
                version, routed = self._arm(model, key)
            v = self._version(model, version, label)
            servable = model.loaded.get(v)
            if servable is None:
                raise NotFound(f"Servable not found for request: Specific({name}, {v})")
            servable.in_flight += 1
        try:
            yield servable, routed
        finally:
            with self._lock:
                servable.in_flight -= 1

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[tuple[int, VersionStatus]]:
        """Versions and states, newest first (TF Serving's GetModelStatus)."""
        with self._lock:
            model = self._model(name)
            if version is None and label is None:
                items = sorted(model.status.items(), reverse=True)
                if not items:
                    raise NotFound(f"Could not find any versions of model {name}")
                return items
            v = self._version(model, version, label)
            if v not in model.status:
                raise NotFound(f"Could not find version {v} of model {name}")
            return [(v, model.status[v])]


def _file_key(path: Path | None) -> tuple[int, int, int] | None:
    """(mtime, size, inode): equal on two polls means the file is not being written."""
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else None


__all__ = ["ModelManager", "ServingError", "VersionStatus"]
