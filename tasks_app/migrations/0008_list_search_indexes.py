"""Indexes of the task lists at scale (issue 15 item 5).

- ``task_team_newest`` (team, created_at DESC, id DESC) replaces ``task_team_created``: the
  list's exact order within a team, so its LIMIT and capped count stop early;
  ``task_newest`` (created_at DESC, id DESC): newest first across teams (admin, ops).
- On PostgreSQL only: the ``pg_trgm`` extension and one GIN trigram index per searched column,
  on the very expression Django emits for ``icontains`` there (``UPPER(col::text) LIKE
  UPPER(%s)``), so the list's ``?q=`` search (``TaskFilterForm.filter``) is served by them.
  They are not declared on the model (a GIN index cannot be created on SQLite, and the
  model state must stay portable), so they change no model state; SQLite keeps its plain
  search.
"""

from django.conf import settings
from django.db import migrations, models

#: (index name, expression): the expressions Django's PostgreSQL backend emits for
#: ``<field>__icontains`` on the task table.
TRIGRAM_INDEXES = [
    ("task_prompt_trgm", 'UPPER("prompt"::text)'),
    ("task_summary_trgm", 'UPPER("summary"::text)'),
    ("task_task_id_trgm", 'UPPER("task_id"::text)'),
    ("task_code_trgm", 'UPPER("code"::text)'),
]


def trigram_create(apps, schema_editor):
    """On PostgreSQL: ``CREATE EXTENSION IF NOT EXISTS pg_trgm`` and the GIN trigram indexes
    (``IF NOT EXISTS``: running it again changes nothing). Elsewhere: nothing."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, expression in TRIGRAM_INDEXES:
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS "{name}" ON "tasks_app_task" '
            f"USING gin (({expression}) gin_trgm_ops)"
        )


def trigram_drop(apps, schema_editor):
    """Undo ``trigram_create``: drop the indexes (the extension stays: others may use it)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _ in TRIGRAM_INDEXES:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_vendor_call"),
        ("tasks_app", "0007_task_needs_confirmation"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="task",
            name="task_team_created",
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(fields=["team", "-created_at", "-id"], name="task_team_newest"),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(fields=["-created_at", "-id"], name="task_newest"),
        ),
        migrations.RunPython(trigram_create, trigram_drop),
    ]
