"""Reference data a lab starts with: adult reference intervals and flags (editable by lab admins).

Idempotent; used by a data migration (with historical models) and by the test suite.
"""
from .stats import DEFAULT_REFERENCE_INTERVALS


def seed(apps, schema_editor=None):
    ReferenceInterval = apps.get_model("slides", "ReferenceInterval")
    if ReferenceInterval.objects.exists():
        return
    for name, codes, measure, low, high, flag_low, flag_high, order in DEFAULT_REFERENCE_INTERVALS:
        ReferenceInterval.objects.create(name=name, codes=codes, measure=measure, low=low, high=high,
                                         flag_low=flag_low, flag_high=flag_high, display_order=order)
