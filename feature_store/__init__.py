"""Feast feature store: definitions over PostgreSQL (offline) and Redis (online).

Nothing here imports feast at package import time (it takes seconds); the modules
that need it import it where it is used.
"""
