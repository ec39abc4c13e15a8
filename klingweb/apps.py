"""App config for the project package itself: project-level commands and system checks."""

from __future__ import annotations

from django.apps import AppConfig


class KlingwebConfig(AppConfig):
    """Registers ``klingweb`` so its ``management/commands`` (kling_api, kling_sandbox) load,
    and its system checks (``klingweb.checks``) are registered."""

    name = "klingweb"
    verbose_name = "Klingweb"

    def ready(self) -> None:
        # Registration only (Django's documented place for it); the checks run on `check`.
        from klingweb import checks  # noqa: F401
