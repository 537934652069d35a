"""Form helpers the pages of every app share."""
from collections.abc import Callable
from typing import TypeVar

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError

T = TypeVar("T")


def form_errors_text(form: forms.Form) -> str:
    """An invalid form's errors in one line, field by field, for a message after a redirect."""
    return "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())


def form_posted(request, form_class: type[forms.Form], *, invalid_message: str = "") -> forms.Form | None:
    """The form of a POST to a page that redirects afterwards, when it is valid; else None, its
    errors (or ``invalid_message``) in the page's messages."""
    form = form_class(request.POST)
    if form.is_valid():
        return form
    messages.error(request, invalid_message or form_errors_text(form))
    return None


def form_save(form: forms.Form, save: Callable[[], T]) -> T | None:
    """Call ``save`` (a service given the form's cleaned data) and return what it returns; when it
    refuses with a ValidationError, that becomes the form's errors (on the fields it names when the
    form has them, else on the whole form) and None comes back."""
    try:
        return save()
    except ValidationError as exc:
        for field, messages in (exc.message_dict.items() if hasattr(exc, "error_dict") else [(None, exc.messages)]):
            form.add_error(field if field in form.fields else None, messages)
        return None
