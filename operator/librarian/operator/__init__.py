"""The Kubernetes side: CRD spec parsing, kopf handlers (thin), Secrets, and an emulated API.

Why this exists: everything that talks to the Kubernetes API lives here;
importing :mod:`librarian.operator.handlers` registers the operator's handlers.
"""
