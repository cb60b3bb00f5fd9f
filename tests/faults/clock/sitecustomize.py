"""A skewed wall clock for one test process: put this folder first on its PYTHONPATH.

Python imports ``sitecustomize`` before anything else, so every module, kombu's
``from time import time`` included, sees the wall clock ``FAULT_CLOCK_SKEW`` seconds
ahead (or behind, if negative), as on a host whose clock is off. Monotonic clocks, and
anything read in C (``datetime.now()``), are left alone.
"""

from __future__ import annotations

import os
import time

_SKEW = float(os.environ.get("FAULT_CLOCK_SKEW") or 0)
if _SKEW:
    _true_time, _true_time_ns = time.time, time.time_ns
    time.time = lambda: _true_time() + _SKEW
    time.time_ns = lambda: _true_time_ns() + int(_SKEW * 1e9)
