"""The embedded default (``make demo``) and its bundled real data."""
