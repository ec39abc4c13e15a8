"""``Team.settings_version`` (issue 15 item 3): bumped by
``klingweb.accounts.services.team_settings_touch`` in the transaction of every change to a
team's members, roles, budgets, name or zone, or a member's username; a cached usage page is
keyed by it."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("accounts", "0004_kling_account_unified_serves_legacy")]

    operations = [
        migrations.AddField(
            model_name="team",
            name="settings_version",
            field=models.BigIntegerField(default=0, editable=False),
        ),
    ]
