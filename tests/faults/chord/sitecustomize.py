"""Kill a worker in the middle of a chord join: put this folder first on its PYTHONPATH.

With ``FAULT_CHORD_KILL`` set, the first worker process to send a chord's body, once it
holds the claim to send it, dies with its whole worker (SIGKILL to the worker and to
itself), at the moment named:

- ``before_send``: the claim is taken and the results read; the body is not sent yet;
- ``after_send``: the body is sent (and confirmed); the chord is not marked done yet.

Only once per ledger folder (``FAULT_LEDGER``): the replacement worker joins normally.
"""

from __future__ import annotations

import os

_MOMENT = os.environ.get("FAULT_CHORD_KILL")
if _MOMENT:
    import signal
    from pathlib import Path
    from typing import Any

    import taskq.join

    _ledger = os.environ["FAULT_LEDGER"]
    _publish = taskq.join._publish

    def _die() -> None:
        from tests.faults.ledger import record

        record(_ledger, "kill", None, moment=_MOMENT)
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    def _first_time() -> bool:
        try:
            fd = os.open(Path(_ledger, "chord-killed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def _dying_publish(*args: Any, **kwargs: Any) -> None:
        if _first_time():
            if _MOMENT == "after_send":
                _publish(*args, **kwargs)
            _die()
        _publish(*args, **kwargs)

    taskq.join._publish = _dying_publish
