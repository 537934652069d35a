# Red-cell morphology graded by the reviewer (slides.morphology).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('slides', '0009_report_comment_release'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='RedCellGrade',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('finding', models.CharField(help_text='A code of slides.morphology.catalogue (validated there).', max_length=40)),
                ('grade', models.CharField(help_text="0, 1+, 2+, 3+ or present (the finding's scale).", max_length=10)),
                ('percent', models.FloatField(blank=True, help_text='Schistocytes: % of red cells (gives the grade).', null=True)),
                ('graded_at', models.DateTimeField()),
                ('graded_by', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('slide', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='red_cell_grades', to='slides.slide')),
            ],
            options={
                'ordering': ['id'],
                'constraints': [models.UniqueConstraint(fields=('slide', 'finding'), name='one_grade_per_slide_finding')],
            },
        ),
    ]
