"""Process set-up that must happen before TensorFlow or TF-Agents is imported.

Imported first by the `rlplat` package (rlplat.agents and rlplat.envs included), so any
entry point gets it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from rlplat import _quiet_import

# tf-agents 0.19 is built on Keras 2: TF 2.21 must load tf-keras, not Keras 3. Ray workers
# get the same variables through runtime_env (see ENV_VARS).
ENV_VARS = {
    "TF_USE_LEGACY_KERAS": "1",
    "SDL_VIDEODRIVER": "dummy",  # headless pygame; `--render human` overrides it
    "RAY_USAGE_STATS_ENABLED": "0",
    # imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (to keep Ctrl-C from it), which
    # forces a fork() that runs every library's atfork handlers and Python code in the child;
    # with gRPC loaded in the process, the child sometimes died before exec under load and an
    # episode video was silently never written. Without it ffmpeg is started by vfork+exec.
    "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT": "1",
}


def configure() -> None:
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError(
            "TensorFlow was imported before rlplat: import rlplat first "
            "or set TF_USE_LEGACY_KERAS=1"
        )
    for key, value in ENV_VARS.items():
        os.environ.setdefault(key, value)
    if not os.path.exists("/dev/nvidiactl"):
        # No NVIDIA driver: TF's "failed call to cuInit" error line is noise, not news.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hides start-up info lines
    # ... except those absl prints before it reads that variable: see _quiet_import.
    _quiet_import.install()
    # Autograph-generated TF-Agents code trips Python 3.11's `is` literal check.
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    # TF-Agents' deprecation notices (foldr back_prop, ...) are not the user's to act on.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    # tf_agents/system/system_multiprocessing.py does `import gym` (gym<=0.23 is not
    # installable beside gymnasium 1.x); gymnasium is API-compatible for what it touches.
    if "gym" not in sys.modules:
        try:
            import gymnasium

            sys.modules["gym"] = gymnasium
        except ImportError:  # pragma: no cover - gymnasium is a hard dependency
            pass


configure()
