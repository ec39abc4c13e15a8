"""App config for elements_app."""

from __future__ import annotations

from django.apps import AppConfig


class ElementsAppConfig(AppConfig):
    """Custom and preset elements; its task family plugs into tasks_app's registry."""

    name = "elements_app"
    verbose_name = "Elements"
