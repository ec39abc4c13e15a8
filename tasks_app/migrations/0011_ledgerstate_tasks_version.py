"""The teams' task versions (issue 15 item 3): a cached usage page is keyed by them, so a task
created or moved to another status shows on the next page load."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0010_usage_rollups")]

    operations = [
        migrations.AddField(
            model_name="ledgerstate",
            name="tasks_version",
            field=models.BigIntegerField(default=0),
        ),
    ]
