"""Shared pytest fixtures."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

# No XLA_FLAGS here: the suite compiles as training does. LLVM optimisation level 0 compiled
# the tests ~40% faster but miscompiles the gradient of a reshape + max 2x2 pool on XLA:CPU
# (jax/jaxlib 0.10.2): Conv4-pool's jitted conv1-conv3 kernel gradients were off by 70-100%
# against eager, while the default level agrees to 1e-6 (reproduction:
# tests/test_models.py::test_pool_gradient_is_the_same_jitted_and_eager).

# The real datasets live beside the repository (../shared/data), never inside it.
DEFAULT_TEST_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def omniglot_data_dir() -> Path:
    """Folder holding the official Omniglot zips (``$METAJAX_TEST_DATA_DIR/omniglot``)."""
    root = Path(os.environ.get("METAJAX_TEST_DATA_DIR") or DEFAULT_TEST_DATA_DIR)
    folder = root / "omniglot"
    if not (folder / "images_background.zip").is_file():
        # Missing data is a broken checkout (CI has ../shared), not a reason to pass quietly.
        pytest.fail(f"Omniglot archives not found in {folder}; set METAJAX_TEST_DATA_DIR to the "
                    f"folder that contains omniglot/")
    return folder


@pytest.fixture(scope="session")
def miniimagenet_data_dir() -> Path:
    """Folder holding MiniImageNet's images/ and split csv files
    (``$METAJAX_TEST_DATA_DIR/miniimagenet``)."""
    root = Path(os.environ.get("METAJAX_TEST_DATA_DIR") or DEFAULT_TEST_DATA_DIR)
    folder = root / "miniimagenet"
    if not (folder / "train.csv").is_file() or not (folder / "images").is_dir():
        pytest.fail(f"MiniImageNet (images/ and train.csv) not found in {folder}; set "
                    f"METAJAX_TEST_DATA_DIR to the folder that contains miniimagenet/")
    return folder


@pytest.fixture(scope="session")
def omniglot_first_load(omniglot_data_dir, tmp_path_factory):
    """One uncached load per session: ``(splits, seconds, cache_dir)``."""
    from metajax.data.omniglot import load_omniglot

    cache_dir = tmp_path_factory.mktemp("omniglot-cache")
    start = time.perf_counter()
    splits = load_omniglot(omniglot_data_dir, cache_dir=cache_dir)
    return splits, time.perf_counter() - start, cache_dir


@pytest.fixture(scope="session")
def omniglot_splits(omniglot_first_load):
    """Omniglot ``OmniglotSplits`` at 28x28 with rotations, loaded once per session."""
    return omniglot_first_load[0]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep decoded-dataset caches of the test session out of the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("metajax-cache")
    old = os.environ.get("METAJAX_CACHE_DIR")
    os.environ["METAJAX_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("METAJAX_CACHE_DIR", None)
    else:
        os.environ["METAJAX_CACHE_DIR"] = old
