"""rlplat: train, evaluate, export and serve reinforcement-learning policies."""

from rlplat import _bootstrap  # noqa: F401  (must run before TensorFlow is imported)

__version__ = "0.1.0"


def _map_checkout_folders() -> None:
    """In a source checkout on sys.path, the folders agents/ and envs/ beside rlplat/ are
    the packages rlplat.agents and rlplat.envs, as pyproject.toml's package-dir maps them
    when installed (a wheel has them inside rlplat/; an editable install maps them itself).

    A finder for exactly those two names, rather than the checkout root on `__path__`
    (which would also make rlplat.rlplat, rlplat.tests, ... importable).
    """
    import importlib.abc
    import importlib.util
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    folders = {f"rlplat.{name}": here.parent / name for name in ("agents", "envs")}
    if (here / "agents").is_dir() or not all(
        (f / "__init__.py").is_file() for f in folders.values()
    ):
        return  # installed: the packages are inside rlplat/, or this is not a checkout

    class CheckoutFolders(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001
            folder = folders.get(fullname)
            if folder is None:
                return None
            return importlib.util.spec_from_file_location(
                fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )

    sys.meta_path.insert(0, CheckoutFolders())


_map_checkout_folders()
