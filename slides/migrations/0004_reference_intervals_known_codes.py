"""A reference interval may only name classes of the taxonomy. An existing interval naming an
unknown code loses that code (audited); one left with no known code is deactivated, its codes
kept in the audit event."""
from django.db import migrations


def fix_unknown_codes(apps, schema_editor):
    CellClass = apps.get_model("annotations", "CellClass")
    ReferenceInterval = apps.get_model("slides", "ReferenceInterval")
    AuditEvent = apps.get_model("annotations", "AuditEvent")
    known = set(CellClass.objects.values_list("code", flat=True))
    for interval in ReferenceInterval.objects.all():
        codes = [c.strip() for c in interval.codes.split("+") if c.strip()]
        unknown = [c for c in codes if c not in known]
        if not unknown:
            continue
        before = {"codes": interval.codes, "active": interval.active}
        kept = [c for c in codes if c in known]
        if kept:
            interval.codes = "+".join(kept)
        else:
            interval.active = False
        interval.save(update_fields=["codes", "active"])
        AuditEvent.objects.create(actor=None, action="slide.reference_interval", target_type="ReferenceInterval",
                                  target_id=str(interval.pk), before=before,
                                  after={"codes": interval.codes, "active": interval.active,
                                         "reason": f"unknown class code(s) {', '.join(unknown)}"})


class Migration(migrations.Migration):
    dependencies = [
        ("slides", "0003_slide_scale_and_sign_reason"),
        ("annotations", "0005_seed_blast_class"),
    ]
    operations = [migrations.RunPython(fix_unknown_codes, migrations.RunPython.noop)]
