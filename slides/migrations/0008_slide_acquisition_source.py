import django.db.models.deletion
from django.db import migrations, models

import sources.models


def slides_to_default_source(apps, schema_editor):
    Source = apps.get_model("sources", "Source")
    Slide = apps.get_model("slides", "Slide")
    default = Source.objects.get(is_default=True)
    Slide.objects.filter(acquisition_source__isnull=True).update(acquisition_source=default)


class Migration(migrations.Migration):
    """Every slide made before sources existed comes from the lab's default source."""

    dependencies = [
        ("slides", "0007_platelets"),
        ("sources", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="slide",
            name="acquisition_source",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name="slides",
                                    to="sources.source"),
        ),
        migrations.RunPython(slides_to_default_source, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="slide",
            name="acquisition_source",
            field=models.ForeignKey(
                default=sources.models.default_source_id,
                help_text="The microscope/camera its images come from (sources.Source).",
                on_delete=django.db.models.deletion.PROTECT, related_name="slides", to="sources.source",
                verbose_name="source"),
        ),
    ]
