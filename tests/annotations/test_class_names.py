"""Class names, not codes, where people read them: the images list and the expert agreement page."""
from django.urls import reverse

from annotations import services
from tests.annotations.conftest import cls, make_cells


def test_images_list_shows_class_names(client, labeller, lab_admin):
    (image,) = make_cells(lab_admin, 1)
    services.label_submit(image=image, labeller=labeller, cell_class=cls("neutrophil_segmented"))
    client.force_login(labeller)
    html = client.get(reverse("annotations:image_list")).content.decode()
    assert "Neutrophil, segmented" in html and "neutrophil_segmented" not in html


def test_expert_agreement_tables_show_class_names(client, labeller, labeller2, reviewer, lab_admin):
    for image, (a, b) in zip(make_cells(lab_admin, 2), [("neutrophil_segmented", "neutrophil_band"),
                                                         ("monocyte", "monocyte")]):
        services.label_submit(image=image, labeller=labeller, cell_class=cls(a))
        services.label_submit(image=image, labeller=labeller2, cell_class=cls(b))
    client.force_login(reviewer)
    html = client.get(reverse("annotations:agreement")).content.decode()
    tables = html.split('id="per-class"')[1]
    assert "Neutrophil, segmented" in tables and "Neutrophil, band (stab)" in tables
    assert ">neutrophil_segmented<" not in tables and "neutrophil_band" not in tables
    assert "Neutrophil, segmented ↔ Neutrophil, band (stab)" in html
