# Single source of the package version (pyproject may read it dynamically).
__version__ = "0.1.0"
