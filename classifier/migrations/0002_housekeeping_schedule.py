from django.db import migrations


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_5_min, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.get_or_create(
        name="Resend classification lost while the broker was away",
        defaults={"task": "classifier.tasks.sweep_unclassified", "interval": every_5_min},
    )
    PeriodicTask.objects.get_or_create(
        name="Mark training runs whose worker died as failed",
        defaults={"task": "classifier.tasks.mark_stale_training_runs", "interval": every_5_min},
    )


class Migration(migrations.Migration):
    dependencies = [("classifier", "0001_initial"), ("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(schedule, migrations.RunPython.noop)]
