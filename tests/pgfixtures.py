"""Placeholder until the PostgreSQL fixtures land."""
