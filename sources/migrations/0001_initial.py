import django.db.models.deletion
import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models


def default_source_create(apps, schema_editor):
    Source = apps.get_model("sources", "Source")
    if not Source.objects.filter(is_default=True).exists():
        Source.objects.create(name="Default", is_default=True,
                              description="Made for the cells and slides uploaded before sources existed.")


class Migration(migrations.Migration):
    initial = True

    dependencies = [migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [
        migrations.CreateModel(
            name="Source",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(help_text="How the lab calls this microscope/camera (unique).", max_length=60)),
                ("description", models.CharField(blank=True, max_length=300)),
                ("active", models.BooleanField(default=True, help_text="Uploads and new slides may name it.")),
                ("is_default", models.BooleanField(default=False, help_text="Uploads that name no source come from this one.")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("created_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT,
                                                 related_name="+", to=settings.AUTH_USER_MODEL)),
            ],
            options={
                "ordering": ["name", "id"],
                "constraints": [
                    models.UniqueConstraint(django.db.models.functions.text.Lower("name"), name="source_name_unique"),
                    models.UniqueConstraint(condition=models.Q(("is_default", True)), fields=("is_default",),
                                            name="one_default_source"),
                    models.CheckConstraint(condition=models.Q(("is_default", False), ("active", True), _connector="OR"),
                                           name="default_source_active"),
                ],
            },
        ),
        migrations.RunPython(default_source_create, migrations.RunPython.noop),
    ]
