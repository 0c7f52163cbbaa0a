"""Filters: each one file, each a rule that keeps or removes candidates (registered in orchestrator/registry.py)."""
