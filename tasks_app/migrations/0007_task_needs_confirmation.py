"""``Task.needs_confirmation``: a task finished on a callback that a query has not
confirmed yet (callbacks carry a subset of the task, KLING_API_2026.md §6), and a partial
index the poller's claim uses to find such tasks when they are due."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks_app", "0006_delete_clusterlease_pollclaim"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="needs_confirmation",
            field=models.BooleanField(
                default=False,
                help_text="Finished on a callback the vendor's query has not confirmed yet: "
                "the poller asks for the full answer.",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("needs_confirmation", True)),
                fields=["next_poll_at"],
                name="task_confirm_due",
            ),
        ),
    ]
