import os
import sys

import pytest

_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")

# Let the CPU tests run from a plain checkout: use the source tree when fastna is not installed.
try:
    import fastna  # noqa: F401
except ImportError:
    sys.path.insert(0, _PY)
    os.environ["PYTHONPATH"] = _PY + os.pathsep + os.environ.get("PYTHONPATH", "")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
