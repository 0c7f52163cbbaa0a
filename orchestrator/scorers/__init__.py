"""Scorers: rescore candidates, never drop one (registered in orchestrator/registry.py)."""
