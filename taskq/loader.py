"""Loader: where an app's settings and task modules come from, as a Celery project has them.

``settings_from`` reads a config source (a module or its name, ``"module:attr"`` such as
``"django.conf:settings"``, a class, an object, a mapping), optionally only the names
under a namespace (``namespace="CELERY"``: ``CELERY_BROKER_URL`` is ``broker_url``).
``import_task_modules`` imports what ``imports``/``include`` name and what
``autodiscover_tasks`` asked for: the worker does so at start, so every task is
registered before the first message is read.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .celery_settings import OLD_NAMES
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import Taskq

logger = logging.getLogger(__name__)

Packages = Iterable[str] | Callable[[], Iterable[str]]


def resolve(spec: str) -> Any:
    """``"module"`` or ``"module:attr"`` (``"module.attr"`` when no module has that name)."""
    module_name, _, attr = spec.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        head, _, tail = module_name.rpartition(".")
        if attr or not head or exc.name != module_name:
            raise ConfigurationError(f"Cannot import {spec!r}: {exc}") from exc
        module_name, attr = head, tail
        found = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from None
    return found


def settings_from(source: object, namespace: str | None = None) -> dict[str, Any]:
    """The settings a config source holds, by taskq's (Celery's) lower-case names.

    Without a namespace, public lower-case names that are plain data are settings (a
    config module also holds imports and helpers), and so are Celery's old upper-case
    names (``BROKER_URL``, ``CELERYD_CONCURRENCY``). With one, only names after
    ``NAMESPACE_`` are, the rest of a Django settings module is not ours.
    """
    obj = resolve(source) if isinstance(source, str) else source
    items = _items(obj)
    if namespace:
        prefix = namespace.rstrip("_") + "_"
        return {
            key[len(prefix) :].lower(): value
            for key, value in items
            if key.upper().startswith(prefix.upper()) and len(key) > len(prefix)
        }
    found: dict[str, Any] = {}
    for key, value in items:
        if key in OLD_NAMES:
            found[OLD_NAMES[key]] = value
        elif _is_setting_candidate(key, value):
            found[key] = value
    return found


def _items(obj: object) -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        return [(str(k), v) for k, v in obj.items()]
    if isinstance(obj, types.ModuleType | type):
        return list(vars(obj).items())
    # An instance, such as Django's lazy settings object: what dir() lists of it.
    return [(name, getattr(obj, name)) for name in dir(obj) if not name.startswith("_")]


def _is_setting_candidate(name: str, value: Any) -> bool:
    # Only lower-case public names that are plain data: an unknown one is then a typo.
    if name.startswith("_") or not name.islower():
        return False
    return not isinstance(value, types.ModuleType | types.FunctionType | type)


@dataclass(frozen=True)
class Discovery:
    """One ``autodiscover_tasks`` call: look for ``<package>.<related_name>`` in each package."""

    packages: Packages | None
    related_name: str = "tasks"

    def modules(self) -> list[str]:
        packages = self.packages
        if packages is None:
            found: Iterable[str] = django_apps()
        else:
            found = packages() if callable(packages) else packages
        return [f"{p}.{self.related_name}" for p in found]


def django_apps() -> list[str]:
    """Django's installed apps: where ``autodiscover_tasks()`` looks when given no packages.

    Outside a Django project (no ``DJANGO_SETTINGS_MODULE``), none.
    """
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return []
    try:
        import django
        from django.apps import apps
    except ImportError:
        return []
    if not apps.ready:
        django.setup()  # what `manage.py` does first: the worker is a Django process too
    return [config.name for config in apps.get_app_configs()]


def import_task_modules(app: Taskq, discoveries: Iterable[Discovery]) -> list[str]:
    """Import every module that declares the app's tasks; the names imported.

    A module named by ``imports``/``include`` must exist. A discovered one (a package's
    ``tasks`` module) may be missing: not every Django app has tasks. An error raised
    inside a module that exists is the user's bug and is raised as it is.
    """
    imported = []
    for name in (*app.conf.imports, *app.conf.include):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            raise ConfigurationError(
                f"Cannot import task module {name!r} (from the imports/include settings): "
                f"{exc}. Check the name and that its folder is on sys.path."
            ) from exc
        imported.append(name)
    for discovery in discoveries:
        for name in discovery.modules():
            if _import_if_present(name):
                imported.append(name)
    return imported


def _import_if_present(name: str) -> bool:
    package = name.rpartition(".")[0]
    try:
        if importlib.util.find_spec(package) is None:
            return False
        if importlib.util.find_spec(name) is None:
            return False
    except ModuleNotFoundError:
        return False
    importlib.import_module(name)
    logger.debug("Imported task module %s", name)
    return True


__all__ = ["Discovery", "django_apps", "import_task_modules", "resolve", "settings_from"]
