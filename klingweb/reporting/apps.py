"""App config for reporting."""

from __future__ import annotations

from django.apps import AppConfig


class ReportingConfig(AppConfig):
    """Usage reports over the deduction ledger (label ``reporting``; no models)."""

    name = "klingweb.reporting"
    label = "reporting"
    verbose_name = "Usage reports"
