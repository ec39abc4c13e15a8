"""App config for the project package itself, which holds project-level commands."""

from __future__ import annotations

from django.apps import AppConfig


class KlingwebConfig(AppConfig):
    """Registers ``klingweb`` so its ``management/commands`` (kling_api, kling_sandbox) load."""

    name = "klingweb"
    verbose_name = "Klingweb"
