"""API-wide behaviour: every error is JSON with a message, never an HTML 500 for bad input.

A view names the service exceptions that mean "not now, the state forbids it" in ``conflicts``
(answered 409) and those that mean "bad request" in ``invalid`` (answered 400); both with the
exception's message as ``detail``, so no view catches them by hand.
"""
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.views import exception_handler as drf_exception_handler


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def validated_input(serializer_class, data) -> dict:
    """``data`` checked by ``serializer_class``: its validated data, or a 400 with the field errors."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def exception_handler(exc, context):
    view = context.get("view")
    if isinstance(exc, getattr(view, "conflicts", ())):
        exc = Conflict(detail=str(exc))
    elif isinstance(exc, getattr(view, "invalid", ())):
        exc = ValidationError(detail={"detail": str(exc)})
    elif isinstance(exc, DjangoValidationError):
        exc = ValidationError(detail=exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})
    elif isinstance(exc, DjangoPermissionDenied) and str(exc):
        exc = PermissionDenied(detail=str(exc))  # a service's refusal keeps its reason (DRF's would not)
    return drf_exception_handler(exc, context)
