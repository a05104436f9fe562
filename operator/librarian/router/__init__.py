"""The query router: speaks Qdrant's REST API for a virtual "library" collection.

Why this exists: applications switch to the library by changing one URL. The
router sends each query only to the domains that can answer it, fuses what
they return, caches results, and measures its own recall in the background.
"""

from librarian.router.app import create_app
from librarian.router.state import RouterConfig, RouterState

__all__ = ["RouterConfig", "RouterState", "create_app"]
