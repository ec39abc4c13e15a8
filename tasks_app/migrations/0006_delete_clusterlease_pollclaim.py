"""Polling becomes one long-running ``manage.py kling_poll`` process (the Procfile's
``poller``): the cluster-wide ``ClusterLease`` goes, and so does the django-q2 schedule
``klingweb-poll`` that re-armed the old in-cluster loop (its job no longer exists). Pollers
claim (Kling account, family) groups in the new ``PollClaim`` table. Reversing re-creates the
empty lease table only; ``setup_schedules`` no longer creates the schedule.
"""

import django.db.models.deletion
from django.db import migrations, models


def poll_schedule_delete(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name="klingweb-poll").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("django_q", "0001_initial"),
        ("tasks_app", "0005_money_ledger"),
    ]

    operations = [
        migrations.RunPython(poll_schedule_delete, migrations.RunPython.noop),
        migrations.DeleteModel(name="ClusterLease"),
        migrations.CreateModel(
            name="PollClaim",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("family", models.CharField(max_length=40)),
                ("claimed_until", models.DateTimeField(blank=True, null=True)),
                (
                    "account",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="accounts.klingaccount",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("account", "family"), name="pollclaim_group")
                ],
            },
        ),
    ]
