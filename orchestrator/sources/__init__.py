"""Candidate sources: each one file (registered in orchestrator/registry.py or named by a surface config)."""
