"""API-wide behaviour: every error is JSON with a message, never an HTML 500 for bad input."""
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(detail=exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})
    elif isinstance(exc, DjangoPermissionDenied) and str(exc):
        exc = PermissionDenied(detail=str(exc))  # a service's refusal keeps its reason (DRF's would not)
    return drf_exception_handler(exc, context)
