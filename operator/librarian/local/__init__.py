"""The library without a Kubernetes cluster: an in-process API and the Job controller.

Why this exists: ``librarian up`` and ``make demo`` run the real operator
against an emulated Kubernetes API in one process, and play the Job controller
by running each migration Job's own command. Needs the ``local`` extra (kmock).
"""
