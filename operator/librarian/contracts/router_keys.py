"""The environment variables that carry the router's API keys.

Why this exists: the router reads its keys from them, and the operator, which
asks routers for their load, reads the same variables to authenticate; the
operator may not import the router, so both take the names from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = [
    "ENV_API_KEY",
    "ENV_API_KEY_SECONDARY",
    "ENV_READ_ONLY_API_KEY",
    "ENV_READ_ONLY_API_KEY_SECONDARY",
    "caller_key",
]

ENV_API_KEY = "LIBRARIAN_ROUTER_API_KEY"
ENV_API_KEY_SECONDARY = "LIBRARIAN_ROUTER_API_KEY_SECONDARY"
ENV_READ_ONLY_API_KEY = "LIBRARIAN_ROUTER_READ_ONLY_API_KEY"
ENV_READ_ONLY_API_KEY_SECONDARY = "LIBRARIAN_ROUTER_READ_ONLY_API_KEY_SECONDARY"


def caller_key(environ: Mapping[str, str] | None = None) -> str | None:
    """The key to call a router with: its read-only key when set (reading is enough)."""
    env = os.environ if environ is None else environ
    return env.get(ENV_READ_ONLY_API_KEY) or env.get(ENV_API_KEY) or None
