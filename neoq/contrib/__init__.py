"""Integrations with web frameworks: ``neoq.contrib.flask`` and ``neoq.contrib.django``.

Each imports its framework only when imported itself, so ``import neoq`` never needs them.
"""
