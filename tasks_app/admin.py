"""Django admin for tasks_app: tasks (with their history and kept media), events, media.

Vendor state (status, result, cost) is read-only here: only ``task_apply_remote`` writes it.
"""

from __future__ import annotations

from django.contrib import admin

from tasks_app.models import Task, TaskEvent, TaskMedia


class TaskEventInline(admin.TabularInline):
    """A task's status history, read-only."""

    model = TaskEvent
    extra = 0
    can_delete = False
    fields = ("status", "at", "source", "note")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        """History is written by the services only."""
        return False


class TaskMediaInline(admin.TabularInline):
    """A task's result files (vendor URL, kept copy), read-only."""

    model = TaskMedia
    extra = 0
    can_delete = False
    fields = ("kind", "index", "variant", "vendor_id", "file", "size", "kept_at", "attempts")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        """Media rows are made by the media keeper only."""
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    """Tasks of every team: list with status and cost, filters, search by ids and prompt."""

    list_display = (
        "code",
        "team",
        "family",
        "status",
        "creator",
        "model_name",
        "mode",
        "final_unit_deduction",
        "error_code",
        "created_at",
    )
    list_filter = ("status", "family", "mode", "is_stale", "imported", "created_at", "team")
    search_fields = ("=code", "task_id", "prompt", "summary", "error_request_id", "error_message")
    list_select_related = ("team", "creator")
    date_hierarchy = "created_at"
    raw_id_fields = ("team", "creator", "kling_account")
    inlines = (TaskEventInline, TaskMediaInline)
    readonly_fields = (
        "code",
        "task_id",
        "status",
        "task_status_msg",
        "result",
        "final_unit_deduction",
        "error_code",
        "error_message",
        "error_request_id",
        "vendor_created_at",
        "vendor_updated_at",
        "submitted_at",
        "finished_at",
        "created_at",
        "updated_at",
    )


@admin.register(TaskEvent)
class TaskEventAdmin(admin.ModelAdmin):
    """Status-history entries of all tasks."""

    list_display = ("task", "status", "at", "source", "note")
    list_filter = ("status", "source", "at")
    search_fields = ("=task__code", "task__task_id", "note")
    list_select_related = ("task",)
    raw_id_fields = ("task",)
    date_hierarchy = "at"


@admin.register(TaskMedia)
class TaskMediaAdmin(admin.ModelAdmin):
    """Result files: vendor URL, kept copy, download attempts and errors."""

    list_display = ("task", "kind", "index", "variant", "size", "kept_at", "attempts", "last_error")
    list_filter = ("kind", "variant", "kept_at")
    search_fields = ("=task__code", "task__task_id", "vendor_id", "source_url")
    list_select_related = ("task",)
    raw_id_fields = ("task",)
