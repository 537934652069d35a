from django.db import migrations, models


def thresholds_of_earlier_versions(apps, schema_editor):
    """Versions registered before every version had a threshold stored 0.0 whatever their
    checkpoint applied. Each gets the threshold its checkpoint applies when it is loaded now
    (classifier.ml.voting.checkpoint_threshold, on the same metrics and config): fitted on its
    validation curve where that had enough cells, else the conservative default."""
    from classifier.ml.voting import checkpoint_threshold

    ModelVersion = apps.get_model("classifier", "ModelVersion")
    for version in ModelVersion.objects.all():
        t = checkpoint_threshold({"metrics": version.metrics, "config": version.config})
        ModelVersion.objects.filter(pk=version.pk).update(
            default_threshold=t.value, threshold_source=t.source, threshold_why=t.why[:300])


class Migration(migrations.Migration):

    dependencies = [
        ('classifier', '0005_housekeeping_moves_to_the_sweep'),
    ]

    operations = [
        migrations.AlterField(
            model_name='modelversion',
            name='default_threshold',
            field=models.FloatField(default=0.8, help_text='The confidence threshold this version applies unless the lab sets its own (never 0).'),
        ),
        migrations.AddField(
            model_name='modelversion',
            name='threshold_source',
            field=models.CharField(default='default', help_text="Where that threshold comes from: 'validation' (fitted) or 'default'.", max_length=20),
        ),
        migrations.AddField(
            model_name='modelversion',
            name='threshold_why',
            field=models.CharField(blank=True, help_text='Where that threshold comes from, in words.', max_length=300),
        ),
        migrations.RunPython(thresholds_of_earlier_versions, migrations.RunPython.noop),
    ]
