import django.db.models.deletion
from django.db import migrations, models

import sources.models


def images_to_default_source(apps, schema_editor):
    Source = apps.get_model("sources", "Source")
    CellImage = apps.get_model("annotations", "CellImage")
    default = Source.objects.get(is_default=True)
    CellImage.objects.filter(acquisition_source__isnull=True).update(acquisition_source=default)


class Migration(migrations.Migration):
    """Every cell image stored before sources existed comes from the lab's default source."""

    dependencies = [
        ("annotations", "0010_platelet_calibration"),
        ("sources", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="cellimage",
            name="acquisition_source",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="cell_images", to="sources.source"),
        ),
        migrations.RunPython(images_to_default_source, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="cellimage",
            name="acquisition_source",
            field=models.ForeignKey(
                default=sources.models.default_source_id,
                help_text="The microscope/camera the image comes from (sources.Source); not to be confused with "
                          "``source``, what kind of image it is.",
                on_delete=django.db.models.deletion.PROTECT, related_name="cell_images", to="sources.source",
                verbose_name="source"),
        ),
    ]
