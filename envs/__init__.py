"""Environments: Gymnasium ids or `module:Class`, vector envs, and the TF-Agents adapter."""

if __name__ != "rlplat.envs":  # one module, one name: a registry imported twice would split
    raise ModuleNotFoundError(
        f"{__file__}: rlplat's envs/ folder is the package rlplat.envs, not a top-level "
        "`envs` (is an rlplat source checkout on sys.path ahead of your own `envs` package?)",
        name=__name__,
    )


from rlplat.envs.make import (
    EnvSpaces,
    VecEnv,
    add_module_dir,
    make,
    make_vec,
    module_dir,
    spaces,
    user_modules,
)

__all__ = [
    "EnvSpaces", "VecEnv", "add_module_dir", "make", "make_vec", "module_dir", "spaces",
    "user_modules",
]  # fmt: skip
