"""``python -m taskq`` is the ``taskq`` command."""

from .cli import main

main()
