"""The two periodic tasks of 0002 are replaced by one sweep (leukoportal.tasks.sweep, declared in the
settings' CELERY_BEAT_SCHEDULE), which also recovers slides and queued runs and evaluations."""
from django.db import migrations

OLD = {
    "Resend classification lost while the broker was away": "classifier.tasks.sweep_unclassified",
    "Mark training runs whose worker died as failed": "classifier.tasks.mark_stale_training_runs",
}


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(task__in=OLD.values()).delete()


def restore(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_5_min, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    for name, task in OLD.items():
        PeriodicTask.objects.get_or_create(name=name, defaults={"task": task, "interval": every_5_min})


class Migration(migrations.Migration):
    dependencies = [("classifier", "0004_prediction_ood_score_and_reasons"), ("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(remove, restore)]
