"""The promotion gate's minimums are the lab's to set, on a page that says why the defaults are what they are."""
from django.urls import reverse

from annotations.models import AuditEvent, LabSettings


def test_gate_minimums_have_justified_defaults_and_are_set_by_lab_admins(client, reviewer, lab_admin):
    url = reverse("classifier:gate_settings")
    client.force_login(reviewer)
    assert client.get(url).status_code == 403
    client.force_login(lab_admin)
    page = client.get(url).content.decode()
    assert 'value="20"' in page and 'value="200"' in page and 'value="2.0"' in page
    assert "70–97%" in page and "McNemar" in page  # the help text justifies the defaults
    assert client.post(url, {"min_heldout_per_class": "0", "min_heldout_total": "200",
                             "margin_percent": "2"}).status_code == 400
    response = client.post(url, {"min_heldout_per_class": "30", "min_heldout_total": "300", "margin_percent": "1.5"})
    assert response.status_code == 302
    lab = LabSettings.get()
    assert (lab.gate_min_heldout_per_class, lab.gate_min_heldout_total) == (30, 300)
    assert abs(lab.promotion_margin - 0.015) < 1e-9
    event = AuditEvent.objects.get(action="settings.promotion_gate")
    assert event.actor == lab_admin and event.before["gate_min_heldout_total"] == 200
    assert event.after["gate_min_heldout_total"] == 300
    training = client.get(reverse("classifier:training")).content.decode()
    assert "at least 300 held-out cells, and\n30 per class" in training
