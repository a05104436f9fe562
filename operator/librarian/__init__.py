"""qdrant-librarian: a library of libraries over a fleet of Qdrant clusters."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    # One source: pyproject's version (tools/set_version.py rewrites it with the chart's).
    __version__ = version("qdrant-librarian")
except PackageNotFoundError:  # the sources alone, not installed
    __version__ = "0+unknown"
