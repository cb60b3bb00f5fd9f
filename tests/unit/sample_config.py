"""A config module for test_config: loaded by name with config_from_object."""

import os  # noqa: F401 - imports in a config module are ignored

result_expires = 60
