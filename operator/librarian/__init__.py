"""qdrant-librarian: a library of libraries over a fleet of Qdrant clusters."""

__version__ = "0.1.0"
