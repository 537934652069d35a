from django.db import migrations

from annotations.seed import seed


class Migration(migrations.Migration):
    dependencies = [("annotations", "0002_initial"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
