"""Hide TensorFlow's start-up INFO lines, keep its warnings and errors.

TensorFlow's C++ libraries log through absl. Lines logged before absl is initialised go
straight to file descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says; on some CPUs that is six
INFO lines on every import ("oneDNN custom operations are on", "Could not find cuda
drivers", each after absl's "before absl::InitializeLog()" notice). They would precede every
`rlplat` command's own output, a one-line config error included.

So the import of `tensorflow` itself (wherever it is first triggered: rlplat, TF-Agents, a
Ray worker) runs with descriptor 2 sent to a temporary file; afterwards every line is written
back except absl INFO lines and absl's pre-initialisation notice. Nothing else changes: no
TF option is touched, so numerics are as they were. Python-level output written during the
import is replayed too (after the import, not lost).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType

# absl's prefix: severity letter, MMDD, time, thread id, file:line]. INFO only.
_ABSL_INFO = re.compile(rb"^I\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]\s]+:\d+\] ")
_ABSL_PREINIT = b"WARNING: All log messages before absl::InitializeLog() is called"


# On a machine without a usable GPU, TensorFlow's CUDA platform logs this at ERROR when it
# first looks for GPUs. It is kept (for a message that needs it: cuda_note) but not shown.
_CUINIT = re.compile(rb"^E\d{4} [^\]]*\] failed call to cuInit")
cuda_init_errors: list[str] = []


def keep_line(line: bytes) -> bool:
    """False for the start-up lines this module hides; True for everything else."""
    return not (_ABSL_INFO.match(line) or line.startswith(_ABSL_PREINIT) or _CUINIT.match(line))


def filter_lines(data: bytes, drop: tuple[bytes, ...] = ()) -> bytes:
    lines = [line for line in data.splitlines(keepends=True) if not line.startswith(drop)]
    cuda_init_errors.extend(
        line.decode(errors="replace").split("] ", 1)[1].strip()
        for line in lines
        if _CUINIT.match(line)
    )
    return b"".join(line for line in lines if keep_line(line))


def cuda_note() -> str:
    """' (CUDA: ...)' when TensorFlow's CUDA platform failed to start in this process."""
    return f" (CUDA: {cuda_init_errors[-1]})" if cuda_init_errors else ""


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with stderr_filtered():
            self._inner.exec_module(module)
            if module.__name__ == "tensorflow":
                _find_gpus(module)


def _find_gpus(tf: ModuleType) -> None:
    """TensorFlow starts its CUDA platform lazily, at the first device listing or op (a
    mirrored learner's device check, a server's first model), and that is when a machine
    without a GPU gets the cuInit line: start it here, inside the filter, once. Listing
    physical devices does not start TensorFlow's runtime, so settings that must precede
    the first op (threads, visible devices, memory growth) still apply."""
    with contextlib.suppress(Exception):  # a broken install: the caller's first use says so
        tf.config.list_physical_devices("GPU")


@contextlib.contextmanager
def stderr_filtered(drop: tuple[bytes, ...] = ()) -> Iterator[None]:
    """Descriptor 2 goes to a temporary file for the block; its lines are filtered back
    (also without those starting with one of `drop`)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = filter_lines(captured.read(), drop)
            while kept:
                kept = kept[os.write(2, kept) :]


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the named top-level modules; finds nothing itself."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._names:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def install(names: Iterable[str] = ("tensorflow",)) -> None:
    """Quiet the first import of `names` in this process (no-op if already imported)."""
    if any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    if os.environ.get("RLPLAT_TF_STARTUP_LOG") == "1":  # to see everything, for debugging
        return
    sys.meta_path.insert(0, _QuietFinder(names))
