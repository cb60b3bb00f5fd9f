"""Benchmarks: ``make bench`` (taskq vs Celery, see docs/performance.md) and one-off studies.

This package must stay importable by the Celery environment too, so it imports nothing.
"""
