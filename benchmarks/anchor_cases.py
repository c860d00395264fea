"""The anchor cases of docs/PERFORMANCE.md section 2, shared by every benchmark script.

The table itself lives in the package (fastna.presets, also behind `python -m fastna profile
--preset`); this module only gives the benchmark scripts their historical names.
"""
from fastna.presets import PRESETS as CASES, Problem as Case  # noqa: F401

BY_NAME = {c.name: c for c in CASES}
