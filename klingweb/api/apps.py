"""App config for the programmatic API."""

from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    """Team API keys and the REST API under ``/api/v1/`` (label ``api``)."""

    name = "klingweb.api"
    label = "api"
    verbose_name = "Programmatic API"
