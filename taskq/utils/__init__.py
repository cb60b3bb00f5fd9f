"""Where Celery keeps its helpers (``celery.utils.log``): so a port that renames the package
keeps its imports."""
