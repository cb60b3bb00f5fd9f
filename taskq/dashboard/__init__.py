"""``taskq dashboard``: the fleet in a browser, and its Prometheus metrics.

The data path: events from the broker (feed.py) into a bounded state (state.py, the
chart's series.py); remote control and queue depths on a timer (poller.py); the page and
its JSON (web.py, api.py) behind the guard (guard.py); ``/metrics`` (metrics.py). Needs
the ``dashboard`` extra (Starlette, uvicorn, prometheus_client); nothing of it is imported
by ``import taskq``.
"""
