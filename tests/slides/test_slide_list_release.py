"""The slides list says which signed versions a signed correction superseded ("Superseded by v2"), on
the page and in the list API, with the successor read in the list's own query."""
import pytest

from slides import services
from slides.models import Slide


def signed(user, code: str) -> Slide:
    slide = services.slide_create(code=code, created_by=user)
    Slide.objects.filter(pk=slide.pk).update(status=Slide.Status.SIGNED, task_state=Slide.TaskState.DONE,
                                             signed_by=user)
    return Slide.objects.get(pk=slide.pk)


@pytest.fixture
def versions(reviewer):
    """SUP-1 v1 superseded by its signed v2; PEND-1 v1 with a correction v2 still being verified."""
    first = signed(reviewer, "SUP-1")
    second = services.slide_correct(slide=first, actor=reviewer, reason="wrong WBC count")
    Slide.objects.filter(pk=second.pk).update(status=Slide.Status.SIGNED, signed_by=reviewer)
    pending_first = signed(reviewer, "PEND-1")
    pending = services.slide_correct(slide=pending_first, actor=reviewer, reason="recount")
    return {"first": first, "second": second, "pending_first": pending_first, "pending": pending}


def status_cell(html: str, slide: Slide) -> str:
    row = html.split(f'<a href="/slides/{slide.pk}/">')[1].split("</tr>")[0]
    return row.split("</td>")[2]  # code, version, status


def test_the_list_page_shows_a_superseded_version_as_superseded_by_its_successor(client, labeller, versions):
    client.force_login(labeller)
    html = client.get("/slides/").content.decode()
    first = status_cell(html, versions["first"])
    assert f'class="slide-status status-superseded" data-superseded-by="{versions["second"].pk}"' in first
    assert "Superseded by" in first and f'<a href="/slides/{versions["second"].pk}/">v2</a>' in first
    assert "Signed" not in first
    assert '<span class="slide-status status-signed">Signed</span>' in status_cell(html, versions["second"])
    # a correction still being verified leaves the signed report standing
    standing = status_cell(html, versions["pending_first"])
    assert '<span class="slide-status status-signed">Signed</span>' in standing and "Superseded" not in standing
    assert f'data-corrected-in="{versions["pending"].pk}"' in standing and "being corrected in" in standing


def test_the_list_api_names_the_signed_successor(client, labeller, versions):
    client.force_login(labeller)
    rows = {(r["code"], r["version"]): r for r in client.get("/api/slides/").json()["results"]}
    assert rows[("SUP-1", 1)]["superseded_by"] == {"id": versions["second"].pk, "version": 2}
    assert rows[("SUP-1", 2)]["superseded_by"] is None
    assert rows[("PEND-1", 1)]["superseded_by"] is None and rows[("PEND-1", 1)]["status"] == "signed"
    detail = client.get(f"/api/slides/{versions['first'].pk}/").json()["slide"]
    assert detail["superseded_by"] == {"id": versions["second"].pk, "version": 2}


def test_the_list_page_reads_the_successors_in_its_own_query(client, labeller, reviewer, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(labeller)
    signed(reviewer, "ONE-1")
    services.slide_correct(slide=Slide.objects.get(code="ONE-1"), actor=reviewer, reason="r")
    with CaptureQueriesContext(connection) as few:
        assert client.get("/slides/").status_code == 200
    for i in range(4):
        first = signed(reviewer, f"MANY-{i}")
        second = services.slide_correct(slide=first, actor=reviewer, reason="r")
        Slide.objects.filter(pk=second.pk).update(status=Slide.Status.SIGNED)
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = client.get("/slides/").content.decode()
    assert html.count('class="slide-status status-superseded"') == 4
