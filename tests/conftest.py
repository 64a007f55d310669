"""Shared fixtures: every backend as a parameter, float64 for checks, seeded randomness."""
import os

import pytest
import torch
from threadpoolctl import threadpool_limits

from nnopt_lab import backend as B

os.environ.setdefault("MPLBACKEND", "Agg")
# The suite runs in parallel workers (pytest -n 2) on small arrays: one thread per worker avoids
# oversubscribing the cores, which makes tiny BLAS and torch calls many times slower.
torch.set_num_threads(1)
threadpool_limits(1)

BACKEND_PARAMS = [
    "numpy",
    "torch-cpu",
    pytest.param("torch-cuda", marks=pytest.mark.skipif(not B.cuda_available(), reason="no CUDA GPU")),
]


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same seed and the numpy/float32 default backend."""
    B.seed(0)
    B.set_backend("numpy")
    B.no_tf32()
    yield


@pytest.fixture(params=BACKEND_PARAMS)
def backend_name(request):
    """The name of each backend in turn: numpy, torch-cpu, torch-cuda (skipped without a GPU)."""
    return request.param


@pytest.fixture
def be64(backend_name):
    """Each backend in float64, for tight comparisons with the references."""
    return B.get_backend(backend_name, "float64")


@pytest.fixture
def be32(backend_name):
    """Each backend in float32, for the rtol ~ 1e-4 checks."""
    return B.get_backend(backend_name, "float32")


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help="also execute every chapter in FULL mode (tests marked 'full'; minutes each)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``full`` run only with ``--full`` (``python tasks.py test --full``; CI does)."""
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="FULL-mode chapter run: add --full (python tasks.py test --full)")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)
