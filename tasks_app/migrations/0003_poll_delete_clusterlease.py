"""Polling becomes one long-running ``manage.py kling_poll`` process (the Procfile's
``poller``): the cluster-wide ``ClusterLease`` goes, and so does the django-q2 schedule
``klingweb-poll`` that re-armed the old in-cluster loop (its job no longer exists). Reversing
re-creates the empty table only; ``setup_schedules`` no longer creates the schedule.
"""

from django.db import migrations


def poll_schedule_delete(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name="klingweb-poll").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tasks_app", "0002_task_retry_at"),
        ("django_q", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(poll_schedule_delete, migrations.RunPython.noop),
        migrations.DeleteModel(name="ClusterLease"),
    ]
