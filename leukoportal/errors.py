"""How the pages show a Django ValidationError that a service raised: as text, as a list of
lines, or as a 400 answer."""
from functools import wraps

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpResponseBadRequest


def error_text(exc: ValidationError) -> str:
    """Every message of the error, in one line."""
    return " ".join(exc.messages)


def error_lines(exc: ValidationError, *, field_names: bool = False) -> list[str]:
    """One line per field the error names (its name in front when ``field_names``, except for the
    errors of the whole form), or the messages of an error that names no field."""
    if not hasattr(exc, "error_dict"):
        return exc.messages
    return [f"{k}: {' '.join(v)}" if field_names and k != NON_FIELD_ERRORS else " ".join(v)
            for k, v in exc.message_dict.items()]


def bad_request_on_validation_error(view):
    """A view whose ValidationError (bad query parameters) answers 400 with the error's text."""
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except ValidationError as exc:
            return HttpResponseBadRequest(error_text(exc))
    return wrapped
