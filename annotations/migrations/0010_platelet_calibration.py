"""The platelet factor has no default any more: it is set only by a calibration against analyser
counts (its interval, the number of slides, when and by whom). No factor stored before this
migration was calibrated by the portal, so each is cleared, and a lab that had the estimate on
with it gets the estimate turned off (audited as a system change); it is turned on again once the
lab has calibrated its factor on the platelet settings page."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def estimate_off_until_calibrated(apps, schema_editor):
    LabSettings = apps.get_model("annotations", "LabSettings")
    AuditEvent = apps.get_model("annotations", "AuditEvent")
    for lab in LabSettings.objects.all():
        before = {"platelet_estimate": lab.platelet_estimate, "platelet_factor": lab.platelet_factor}
        lab.platelet_estimate, lab.platelet_factor = False, None
        lab.save(update_fields=["platelet_estimate", "platelet_factor"])
        if before["platelet_estimate"]:
            AuditEvent.objects.create(
                actor=None, action="settings.platelets", target_type="LabSettings", target_id=str(lab.pk),
                before=before, after={"platelet_estimate": False, "platelet_factor": None,
                                      "why": "uncalibrated factor: calibrate it against analyser counts first"})


class Migration(migrations.Migration):

    dependencies = [
        ('annotations', '0009_label_suggestion_referred'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='labsettings',
            name='platelet_calibrated_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='labsettings',
            name='platelet_calibrated_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='labsettings',
            name='platelet_calibration_n',
            field=models.PositiveIntegerField(blank=True, help_text='Slides the factor was calibrated on.', null=True),
        ),
        migrations.AddField(
            model_name='labsettings',
            name='platelet_calibration_pairs',
            field=models.JSONField(blank=True, default=list, help_text="The calibration's pairs: analyser count, mean platelets per field, source."),
        ),
        migrations.AddField(
            model_name='labsettings',
            name='platelet_factor_high',
            field=models.FloatField(blank=True, help_text="The factor's 95% interval, high.", null=True),
        ),
        migrations.AddField(
            model_name='labsettings',
            name='platelet_factor_low',
            field=models.FloatField(blank=True, help_text="The factor's 95% interval, low.", null=True),
        ),
        migrations.AddField(
            model_name='labsettings',
            name='platelet_factor_se',
            field=models.FloatField(blank=True, help_text="The factor's standard error.", null=True),
        ),
        migrations.AlterField(
            model_name='labsettings',
            name='platelet_factor',
            field=models.FloatField(blank=True, help_text='Platelets per camera field -> 10^9/L, calibrated against analyser counts (none until then).', null=True),
        ),
        migrations.RunPython(estimate_off_until_calibrated, migrations.RunPython.noop),
    ]
