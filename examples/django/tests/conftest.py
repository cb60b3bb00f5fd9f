import os

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django.setup()


@pytest.fixture(scope="session")
def taskq_config():
    return {"broker_url": "memory://", "result_backend": "cache+memory://"}
