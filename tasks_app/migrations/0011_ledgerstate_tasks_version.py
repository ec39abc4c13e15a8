"""The teams' task versions (issue 15 item 3): a cached usage page is keyed by them, so a task
created or moved to another status shows on the next page load. ``Team.ledger_state`` (the
reverse of ``LedgerState.team``): the usage page reads a team's versions with its access
check's query."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tasks_app", "0010_usage_rollups")]

    operations = [
        migrations.AddField(
            model_name="ledgerstate",
            name="tasks_version",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="ledgerstate",
            name="team",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.CASCADE,
                primary_key=True,
                related_name="ledger_state",
                serialize=False,
                to="accounts.team",
            ),
        ),
    ]
