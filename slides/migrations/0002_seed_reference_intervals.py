from django.db import migrations


def seed(apps, schema_editor):
    from slides.seed import seed as seed_reference_intervals

    seed_reference_intervals(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("slides", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
