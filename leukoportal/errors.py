"""How the pages show a service's refusal (a Django ValidationError, or the service's own
exception): as text, as a list of lines, as a 400 answer, or as a message after a redirect."""
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from django.contrib import messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpResponseBadRequest

T = TypeVar("T")


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


def refusal_text(exc: Exception) -> str:
    """What a page says when a service refuses: a ValidationError's messages in one line, any other
    refusal (a locked slide, a busy trainer) in its own words."""
    return error_text(exc) if isinstance(exc, ValidationError) else str(exc)


def call_with_messages(request, call: Callable[[], T], *, refusals: tuple[type[Exception], ...],
                       success: Callable[[T], str] | None = None) -> T | None:
    """Call a service for a page that redirects afterwards: when it refuses (one of ``refusals``)
    its text goes to the page's messages and None comes back; else ``success`` of its result (when
    given) goes to the messages and the result comes back."""
    try:
        result = call()
    except refusals as exc:
        messages.error(request, refusal_text(exc))
        return None
    if success is not None:
        messages.success(request, success(result))
    return result
