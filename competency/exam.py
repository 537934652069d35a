"""The open-test rule, asked by every page and API call that shows a cell's reference label, the model's
call or another expert's reading: while a test is open for a person (assigned or started, not yet
submitted), none of its cells shows them any of these.

It depends on this app's rows only, so the apps below (annotations, slides, the exports) may ask it.
The answer is kept on the user object for the rest of the request; the services that open or close a
test for a person forget it (:func:`exam_forget`).
"""
from __future__ import annotations

from .models import Assignment, TestCell

_CACHE = "_competency_exam_image_ids"


def exam_image_ids(user) -> frozenset[int]:
    """The cells of every test open for ``user`` (none for an anonymous user)."""
    if user is None or not getattr(user, "is_authenticated", False) or user.pk is None:
        return frozenset()
    cached = getattr(user, _CACHE, None)
    if cached is not None:
        return cached
    open_tests = Assignment.objects.filter(person_id=user.pk).exclude(status=Assignment.Status.SUBMITTED) \
        .values("test_id")
    ids = frozenset(TestCell.objects.filter(test_id__in=open_tests).values_list("image_id", flat=True))
    setattr(user, _CACHE, ids)
    return ids


def exam_hides(*, user, image_id: int) -> bool:
    """Is this cell in a test open for ``user`` (reference label, model call and readings hidden)?"""
    return image_id in exam_image_ids(user)


def exam_forget(user) -> None:
    """Forget the cached answer (a test was opened or closed for this user)."""
    if user is not None and hasattr(user, _CACHE):
        delattr(user, _CACHE)
