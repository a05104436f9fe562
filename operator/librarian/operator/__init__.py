"""The operator: one kopf controller per resource, each with its state and status writer.

Why this exists: the DomainMap, ClusterSpecialization and RebalancePolicy
controllers turn what a user declared into work on the fleet and report it in
status; importing :mod:`librarian.operator.handlers` registers their handlers.
"""
