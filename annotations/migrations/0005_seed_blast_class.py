"""Blasts join the taxonomy (an expert assigns them during verification): before, the reference
intervals named a `blast` code no one could record, and every report showed a reassuring 0."""
from django.db import migrations


def add_blast(apps, schema_editor):
    CellClass = apps.get_model("annotations", "CellClass")
    if CellClass.objects.filter(code="blast").exists():
        return
    # The key t, unless this lab already gave it to another active class.
    taken = CellClass.objects.filter(hotkey="t", active=True).exists()
    CellClass.objects.create(code="blast", name="Blast", hotkey="" if taken else "t", display_order=75,
                             is_leukocyte=True, is_abstain=False)


class Migration(migrations.Migration):
    dependencies = [("annotations", "0004_current_label_count")]
    operations = [migrations.RunPython(add_blast, migrations.RunPython.noop)]
