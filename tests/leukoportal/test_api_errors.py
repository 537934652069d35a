"""Service exceptions a view names in ``conflicts`` / ``invalid`` become 409 / 400 with their message."""
import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.permissions import AllowAny
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from leukoportal.api import Conflict


class Busy(Exception):
    pass


class Unnamed(Exception):
    pass


def _view(exc: Exception):
    class RaisingApi(APIView):
        authentication_classes = []
        permission_classes = [AllowAny]
        conflicts = (Busy, DjangoValidationError)
        invalid = (ValueError,)

        def post(self, request):
            raise exc

    return RaisingApi.as_view()


def _post(exc: Exception):
    response = _view(exc)(APIRequestFactory().post("/x/", {}, format="json"))
    response.render()
    return response


@pytest.mark.parametrize("exc, code, body", [
    (Busy("one run at a time"), 409, {"detail": "one run at a time"}),
    (Conflict("already decided"), 409, {"detail": "already decided"}),
    (DjangoValidationError("cannot retry"), 409, {"detail": "['cannot retry']"}),  # named: before the 400 rule
    (ValueError("unknown ensemble"), 400, {"detail": "unknown ensemble"}),
])
def test_named_service_exceptions_answer_their_status_with_the_message(exc, code, body):
    response = _post(exc)
    assert (response.status_code, response.data) == (code, body)


def test_a_django_validation_error_a_view_does_not_name_is_a_400():
    class PlainApi(APIView):
        authentication_classes = []
        permission_classes = [AllowAny]

        def post(self, request):
            raise DjangoValidationError({"code": ["Taken."]})

    response = PlainApi.as_view()(APIRequestFactory().post("/x/", {}, format="json"))
    assert (response.status_code, response.data) == (400, {"code": ["Taken."]})


def test_an_exception_no_view_names_is_not_turned_into_an_answer():
    with pytest.raises(Unnamed):
        _post(Unnamed("a bug"))

