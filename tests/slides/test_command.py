"""`manage.py differential`: the evaluation's JSON shape, and the same result as the portal."""
import json

import pytest
from django.core.management import CommandError, call_command

from slides import services
from slides.selectors import slide_differential
from tests.helpers import field_paths


def test_differential_command_shape_and_same_result_as_the_portal(tmp_path, labeller, slides_model):
    paths = field_paths(2)
    out = tmp_path / "diff.json"
    call_command("differential", *[str(p) for p in paths], "--model", "active", "--json", str(out))
    data = json.loads(out.read_text())
    assert set(data) == {"cells", "counts", "percentages", "intervals", "platelets", "red_cells"}
    assert data["cells"]
    for c in data["cells"]:
        assert set(c) == {"field", "box", "class", "confidence", "agreement"}
        assert c["field"] in {str(p) for p in paths}
        assert len(c["box"]) == 4 and c["box"][0] < c["box"][2] and c["box"][1] < c["box"][3]
        k, n = c["agreement"].split("/")
        assert int(k) <= int(n) == 1
    assert sum(data["counts"].values()) == len(data["cells"])
    for code, (lo, hi) in data["intervals"].items():
        assert lo <= data["percentages"][code] <= hi

    # the portal, on the same files, finds the same cells with the same classes
    slide = services.slide_create(code="CMD-1", created_by=labeller)
    services.slide_images_add(slide=slide, files=[(p.name, p.read_bytes()) for p in paths], uploaded_by=labeller)
    services.slide_process(slide_id=slide.pk)
    portal = sorted((c.box, c.predicted_class) for c in slide.cells.all())
    command = sorted((c["box"], c["class"]) for c in data["cells"])
    assert portal == command
    diff = slide_differential(slide=slide)
    assert {k: v for k, v in diff["percentages"].items() if v} == data["percentages"]
    # ...and the same platelets and red cells per field
    fields = list(slide.fields.order_by("position"))
    assert [f.platelet_count for f in fields] == data["platelets"]["per_field"]
    assert [f.red_cell_count for f in fields] == data["red_cells"]["per_field"]
    lo, hi = data["platelets"]["interval"]
    assert lo <= data["platelets"]["mean"] <= hi

    # --model by id works too; a missing id is a clear error
    call_command("differential", str(paths[0]), "--model", str(slides_model.pk), "--json", str(out))
    with pytest.raises(CommandError, match="does not exist"):
        call_command("differential", str(paths[0]), "--model", "9999", "--json", str(out))


def test_differential_command_needs_a_model_and_real_files(tmp_path, db):
    with pytest.raises(CommandError, match="No model version is active"):
        call_command("differential", str(field_paths(1)[0]), "--json", str(tmp_path / "x.json"))
