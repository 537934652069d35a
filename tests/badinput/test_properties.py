"""Property-based tests (Hypothesis): whatever arrives, the answer is a stored clean PNG or a
clear refusal, never another exception and never a 500."""
import io
import json

from django.test import Client
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from PIL import Image

from annotations.imaging import ImageRejected
from annotations.models import CellImage, Label
from annotations.services import image_upload
from tests.helpers import jpeg_bytes, png_bytes

FAST = hsettings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# at least annotations.imaging.MIN_IMAGE_SIDE a side, so that a mutation that keeps the header reaches the decoder
SEEDS = [png_bytes(size=(40, 40)), jpeg_bytes(size=(40, 40)), png_bytes(size=(37, 33), color=(1, 2, 3))]


@st.composite
def mutated_images(draw):
    """A real PNG/JPEG with bytes flipped, cut, or inserted: the corruptions that reach decoders."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            data = data[:at]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


@FAST
@given(data=st.one_of(st.binary(max_size=2048), mutated_images()))
def test_upload_service_stores_a_valid_png_or_refuses(data, labeller, settings):
    try:
        outcome = image_upload(data=data, uploaded_by=labeller, enqueue_classification=False)
    except ImageRejected as exc:
        assert exc.message and exc.code
        return
    stored = (settings.MEDIA_ROOT / outcome.image.file.name).read_bytes()
    with Image.open(io.BytesIO(stored)) as img:
        img.load()
        assert img.format == "PNG" and img.mode == "RGB"
        assert img.size == (outcome.image.width, outcome.image.height)
        assert not (set(img.info) - {"dpi"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["image", "images", "cell_class", "unsure", "model_version", "note", "code", "split", "sample_code",
          "labels_required_train", "labels_required_heldout", "blind_heldout", "name", "hotkey", "wbc_count",
          "target_count", "kind"]
payloads = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
)
JSON_URLS = ["/api/labels/", "/api/labels/bulk/", "/api/labels/withdraw/", "/api/adjudications/",
             "/api/lab-settings/", "/api/classes/save/", "/api/slides/"]


@FAST
@given(url=st.sampled_from(JSON_URLS), payload=payloads)
def test_label_and_other_json_endpoints_never_answer_500(url, payload, lab_admin):
    client = Client()
    client.force_login(lab_admin)
    image = CellImage.objects.first() or image_upload(data=png_bytes(size=(32, 32)), uploaded_by=lab_admin,
                                                      enqueue_classification=False).image
    if isinstance(payload, dict) and payload.get("image") is True:  # sometimes aim at a real cell
        payload["image"] = image.pk
    r = client.post(url, data=json.dumps(payload), content_type="application/json")
    assert r.status_code < 500
    if r.status_code >= 400:
        assert r.json(), r.content


@FAST
@given(fields=st.dictionaries(st.sampled_from(["split", "sample_code", "file", "files"]),
                              st.text(max_size=40), max_size=4),
       blob=st.one_of(st.binary(max_size=512), mutated_images()))
def test_image_and_batch_upload_endpoints_never_answer_500(fields, blob, labeller):
    client = Client()
    client.force_login(labeller)
    for url, field in (("/api/images/", "file"), ("/api/batches/", "files")):
        data = dict(fields)
        f = io.BytesIO(blob)
        f.name = "x.png"
        data[field] = f
        r = client.post(url, data)
        assert r.status_code < 500
        assert r.json()
    assert Label.objects.count() == 0
