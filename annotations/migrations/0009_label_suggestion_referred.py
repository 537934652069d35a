from django.db import migrations, models
from django.db.models import Exists, OuterRef


def mark_referred_suggestions(apps, schema_editor):
    """Labels made before the field existed: the suggestion was a best guess where the version
    that made it had referred (abstained on) the cell."""
    Label = apps.get_model("annotations", "Label")
    Prediction = apps.get_model("classifier", "Prediction")
    referred = Prediction.objects.filter(image_id=OuterRef("image_id"), model_version_id=OuterRef("suggestion_model_version_id"),
                                         abstained=True)
    Label.objects.filter(suggested_class__isnull=False).filter(Exists(referred)).update(suggestion_referred=True)


class Migration(migrations.Migration):

    dependencies = [
        ("annotations", "0008_platelets"),
        ("classifier", "0005_housekeeping_moves_to_the_sweep"),
    ]

    operations = [
        migrations.AddField(
            model_name="label",
            name="suggestion_referred",
            field=models.BooleanField(
                default=False, help_text="The model referred the cell to an expert: the suggested class was its best "
                                         "guess, not a call it accepted."),
        ),
        migrations.RunPython(mark_referred_suggestions, migrations.RunPython.noop),
    ]
