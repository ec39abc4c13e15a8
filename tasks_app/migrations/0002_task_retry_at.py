"""A queued task's retry time gets its own column, ``Task.retry_at``.

Until now a queued task kept the time of its next create call in ``next_poll_at`` (the
poller's column). The data step moves that time into ``retry_at`` for queued rows and
clears their ``next_poll_at``; reversing copies it back. Also: an index for the submit scan
(status, retry_at), and ``TaskMedia.file`` loses an ``upload_to`` nothing used (kept files
are named by ``tasks_app.media``).
"""

from django.db import migrations, models
from django.db.models import F


def queued_retry_forward(apps, schema_editor):
    Task = apps.get_model("tasks_app", "Task")
    # One UPDATE: both right-hand sides read the row as it was.
    Task.objects.filter(status="queued").update(retry_at=F("next_poll_at"), next_poll_at=None)


def queued_retry_backward(apps, schema_editor):
    Task = apps.get_model("tasks_app", "Task")
    Task.objects.filter(status="queued").update(next_poll_at=F("retry_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("tasks_app", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="retry_at",
            field=models.DateTimeField(
                blank=True,
                help_text="Queued only: when the create call is sent (again).",
                null=True,
            ),
        ),
        migrations.RunPython(queued_retry_forward, queued_retry_backward, elidable=True),
        migrations.AlterField(
            model_name="taskmedia",
            name="file",
            field=models.FileField(blank=True, max_length=300, upload_to=""),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(fields=["status", "retry_at"], name="task_submit_due"),
        ),
    ]
