"""Django admin for elements_app: read-mostly views of elements and the preset cache."""

from __future__ import annotations

from django.contrib import admin

from elements_app.models import Element, PresetElement


@admin.register(Element)
class ElementAdmin(admin.ModelAdmin):
    """Team elements; vendor fields are read-only (Kling owns them)."""

    list_display = ("name", "team", "status", "reference_type", "element_id", "created_at")
    list_filter = ("status", "reference_type", "imported")
    search_fields = ("name", "element_id", "code")
    raw_id_fields = ("team", "creator", "task", "kling_account", "deleted_by")
    readonly_fields = (
        "code",
        "element_id",
        "element_image_list",
        "element_video_list",
        "raw",
        "created_at",
        "updated_at",
    )


@admin.register(PresetElement)
class PresetElementAdmin(admin.ModelAdmin):
    """The cached vendor presets (refreshed by the presets sync)."""

    list_display = ("name", "element_id", "reference_type", "synced_at", "removed_at")
    search_fields = ("name", "element_id")
    readonly_fields = ("raw", "first_seen_at", "synced_at")
