"""Class names, not codes, where people read them: the images list and the expert agreement page."""
from django.urls import reverse

from annotations import services
from tests.factories import CellImageFactory, cell_class


def test_images_list_shows_class_names(client, labeller, lab_admin):
    image = CellImageFactory(uploaded_by=lab_admin)
    services.label_submit(image=image, labeller=labeller, cell_class=cell_class("neutrophil_segmented"))
    client.force_login(labeller)
    html = client.get(reverse("annotations:image_list")).content.decode()
    assert "Neutrophil, segmented" in html and "neutrophil_segmented" not in html


def test_expert_agreement_tables_show_class_names(client, labeller, labeller2, reviewer, lab_admin):
    pairs = [("neutrophil_segmented", "neutrophil_band"), ("monocyte", "monocyte")]
    for image, (a, b) in zip(CellImageFactory.create_batch(2, uploaded_by=lab_admin), pairs):
        services.label_submit(image=image, labeller=labeller, cell_class=cell_class(a))
        services.label_submit(image=image, labeller=labeller2, cell_class=cell_class(b))
    client.force_login(reviewer)
    html = client.get(reverse("annotations:agreement")).content.decode()
    tables = html.split('id="per-class"')[1]
    assert "Neutrophil, segmented" in tables and "Neutrophil, band (stab)" in tables
    assert ">neutrophil_segmented<" not in tables and "neutrophil_band" not in tables
    assert "Neutrophil, segmented ↔ Neutrophil, band (stab)" in html
