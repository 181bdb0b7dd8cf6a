"""What a user sees when any rlplat process starts: rlplat's lines, not TF's start-up INFO."""

from __future__ import annotations

import subprocess
import sys

from conftest import user_env

from rlplat._quiet_import import filter_lines, keep_line

# absl's format (severity, MMDD, time, thread, file:line): the pre-initialisation lines use
# seconds since the epoch as the time, the later ones a wall-clock time.
INFO_PREINIT = b"I0000 00:00:1796006197.982207    2262 port.cc:153] some start-up notice\n"
INFO_LATER = b"I1130 02:36:40.123456   77 cpu_feature_guard.cc:210] more info\n"
WARNING = b"W0000 00:00:1796006197.982207    2262 gpu_device.cc:2340] a real warning\n"
ERROR = b"E0000 00:00:1796006197.982207    2262 cuda_executor.cc:1] a real error\n"
NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"


def test_filter_drops_absl_info_and_its_notice_only():
    python_text = b"Traceback (most recent call last):\nI1 am not absl\n"
    data = NOTICE + INFO_PREINIT + WARNING + INFO_LATER + ERROR + python_text
    assert filter_lines(data) == WARNING + ERROR + python_text
    assert not keep_line(INFO_PREINIT) and not keep_line(NOTICE)


def test_cuda_init_failure_is_kept_for_messages_not_shown():
    from rlplat import _quiet_import

    cuinit = (
        b"E0000 00:00:1796006197.982207    2262 cuda_platform.cc:52] failed call to cuInit: "
        b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
    )
    before = list(_quiet_import.cuda_init_errors)
    try:
        assert filter_lines(WARNING + cuinit + ERROR) == WARNING + ERROR
        assert _quiet_import.cuda_note().startswith(" (CUDA: failed call to cuInit: INTERNAL")
        assert _quiet_import.cuda_note().endswith("UNKNOWN ERROR (303))")
    finally:
        _quiet_import.cuda_init_errors[:] = before


def test_tensorflow_finds_its_gpus_inside_the_quiet_import(tmp_path):
    """Where the CUDA platform starts (a machine without a GPU logs cuInit's failure then):
    inside the filtered import, not at a later device listing."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os, types\n"
        "def list_physical_devices(kind):\n"
        "    os.write(2, b'E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: X\\n')\n"
        "    return []\n"
        "config = types.SimpleNamespace(list_physical_devices=list_physical_devices)\n"
    )
    code = (
        "import rlplat, tensorflow\nfrom rlplat._quiet_import import cuda_note\n"
        "print(cuda_note())\ntensorflow.config.list_physical_devices('GPU')"
    )
    env = {**user_env(), "PYTHONPATH": f"{tmp_path}"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == " (CUDA: failed call to cuInit: X)\n"
    # the fake's second listing writes unfiltered, as TensorFlow itself never would
    assert r.stderr.count("cuInit") == 1, r.stderr


def test_importing_tensorflow_prints_no_start_up_info():
    code = "import rlplat, tensorflow, tf_agents; import sys; sys.stderr.write('after\\n')"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=user_env(), timeout=300
    )
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stderr.splitlines(keepends=True)
    assert lines and lines[-1] == b"after\n", r.stderr.decode()
    assert all(keep_line(line) for line in lines), r.stderr.decode()


def test_tensorflow_errors_during_import_still_reach_stderr(tmp_path):
    # A module named tensorflow that writes to descriptor 2 and fails: both must be seen.
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'E0000 00:00:1.0 1 x.cc:1] broken\\n')\n"
        "raise ImportError('no tensorflow here')\n"
    )
    code = "import rlplat\ntry:\n    import tensorflow\nexcept ImportError as e:\n    print(e)"
    env = {**user_env(), "PYTHONPATH": f"{tmp_path}"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert "x.cc:1] broken" in r.stderr and "no tensorflow here" in r.stdout
