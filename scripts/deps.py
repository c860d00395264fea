#!/usr/bin/env python3
"""Prints one group of requirements declared in pyproject.toml, one per line, for pip.

    python scripts/deps.py build      build-system requirements + build tools (no CUTLASS)
    python scripts/deps.py cutlass    the CUTLASS headers wheel (installed with --no-deps)
    python scripts/deps.py test       what the test suite needs
    python scripts/deps.py torch      the supported torch range
    python scripts/deps.py torch-oldest | torch-newest | torch-default   one release

pyproject.toml is the single source of these; the shell scripts never spell a version.
"""
import os
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(group: str) -> int:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    build = meta["build-system"]["requires"]
    extras = meta["project"]["optional-dependencies"]
    tool = meta["tool"]["fastna"]
    is_cutlass = [r.startswith("nvidia-cutlass") for r in build]
    groups = {
        "build": [r for r, c in zip(build, is_cutlass) if not c] + tool["build-tools"],
        "cutlass": [r for r, c in zip(build, is_cutlass) if c],
        "test": extras["test"],
        "torch": extras["torch"],
    }
    for end in ("torch-oldest", "torch-newest", "torch-default"):
        groups[end] = [f"torch=={tool[end]}"]
    if group not in groups:
        print(f"deps.py: unknown group {group!r}; groups: {', '.join(groups)}", file=sys.stderr)
        return 2
    print("\n".join(groups[group]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
