"""URLs of the usage reports (team, my usage, company, CSV exports)."""

from __future__ import annotations

urlpatterns: list = []
