import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("command,expect", [
    (["info"], "backends available"),
    (["demo"], "||out - ref|| / ||ref||"),
    (["profile", "--shape", "12x12", "--kernel", "5", "--heads", "1", "--dim", "8"], "| fwd |"),
])
def test_cli(command, expect):
    # conftest puts python/ on PYTHONPATH when fastna is not installed
    r = subprocess.run([sys.executable, "-m", "fastna", *command], capture_output=True, text=True,
                       env=dict(os.environ), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert expect in r.stdout
