"""Selectors: fill the k slots of an answer, in order (registered in orchestrator/registry.py)."""
