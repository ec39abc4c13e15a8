"""URLs of elements_app: the library, create form, element pages, presets."""

from __future__ import annotations

urlpatterns: list = []
