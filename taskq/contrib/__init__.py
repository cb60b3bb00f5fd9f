"""Extras that are not part of the data path: testing tools (``taskq.contrib.pytest``,
``taskq.contrib.testing``), named where Celery keeps its own."""
