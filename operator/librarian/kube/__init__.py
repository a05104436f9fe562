"""Talking to the Kubernetes API, apart from what the controllers decide.

Why this exists: the operator and the router both read custom resources and
Secrets. The client (one session, typed errors), the CRD spec models, the
names of created objects and the rule for which specialization serves a domain
live here, so neither needs the other, and the router needs no kopf.
"""
