"""What the product does with a Qdrant fleet: sample, analyse, label, catalog, migrate, verify.

Why this exists: these operations are built on the storage port alone, so the
operator, the migration Jobs, the router's loader and the command line share
them, and each is tested against both storage adapters.
"""
