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

from global_state import Snapshot  # noqa: E402


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


@pytest.fixture(autouse=True)
def _no_leaked_global_state():
    """Fails the test that leaves torch flags, the environment or fastna's module attributes
    changed (after its own fixtures, monkeypatch included, were torn down), and restores them,
    so one test's leak cannot break another's."""
    snapshot = Snapshot()
    yield
    leaks = snapshot.restore()
    if leaks:
        pytest.fail("the test left global state changed (restored now): " + "; ".join(leaks),
                    pytrace=False)


@pytest.fixture
def set_tf32():
    """Sets torch.backends.cuda.matmul.allow_tf32 for one test: call it with the value.
    (monkeypatch.setattr cannot undo it on every pytest release: the flag is a property of a
    module object.)"""
    import torch

    matmul = torch.backends.cuda.matmul
    old = matmul.allow_tf32

    def set_(value: bool):
        matmul.allow_tf32 = value

    try:
        yield set_
    finally:
        matmul.allow_tf32 = old
