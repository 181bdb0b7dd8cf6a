"""rlplat serve: how a version's session is configured (rlplat/serving/servable.py)."""

from __future__ import annotations

import numpy as np
import pytest


def _ops_run(servable, arrays) -> set[str]:
    """The op types of the graph the session actually ran for the default signature."""
    import tensorflow as tf

    sig = servable.signature(None)
    metadata = tf.compat.v1.RunMetadata()
    servable._session.run(
        [s.tensor_name for s in sig.outputs.values()],
        {s.tensor_name: a for s, a in zip(sig.inputs.values(), arrays, strict=True)},
        options=tf.compat.v1.RunOptions(output_partition_graphs=True),
        run_metadata=metadata,
    )
    return {node.op for g in metadata.partition_graphs for node in g.node}


def test_served_sessions_run_unfused_kernels_unless_asked_and_answer_alike(models):
    from rlplat.serving.config import ServingConfig
    from rlplat.serving.servable import Servable

    path = models / "pg" / "1"
    servables = {on: Servable("pg", 1, path, ServingConfig(session_remapping=on))
                 for on in (False, True)}  # fmt: skip
    try:
        sig = servables[False].signature(None)
        rng = np.random.default_rng(0)
        arrays = [rng.normal(size=(13, *s.shape[1:])).astype(s.dtype) for s in sig.inputs.values()]
        fused = {on: {op for op in _ops_run(s, arrays) if "Fused" in op}
                 for on, s in servables.items()}  # fmt: skip
        assert not fused[False]  # the default: MatMul, BiasAdd, Tanh as exported
        assert fused[True]  # TensorFlow's default graph fuses them
        plain, remapped = (s.signature(None).run(*arrays) for s in servables.values())
        for key, a, b in zip(sig.outputs, plain, remapped, strict=True):
            if a.dtype.kind in "iu":
                np.testing.assert_array_equal(a, b, err_msg=key)  # the actions
            else:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=key)
    finally:
        for s in servables.values():
            s.close()


def test_session_remapping_is_a_serving_config_key(tmp_path):
    from rlplat.errors import ConfigError
    from rlplat.serving import config as serving_config

    path = tmp_path / "serving.yaml"
    path.write_text("session_remapping: true\n")
    assert serving_config.load(path).session_remapping is True
    assert serving_config.load(None).session_remapping is False
    path.write_text("session_remapping: sometimes\n")
    with pytest.raises(ConfigError, match="session_remapping"):
        serving_config.load(path)
