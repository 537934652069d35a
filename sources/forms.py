from django import forms

from .models import Source
from .selectors import source_default, sources_list


class SourceCreateForm(forms.Form):
    name = forms.CharField(max_length=Source._meta.get_field("name").max_length,
                           help_text="The microscope and camera, as the lab calls them.")
    description = forms.CharField(required=False, max_length=Source._meta.get_field("description").max_length)


class SourceUpdateForm(forms.Form):
    name = forms.CharField(max_length=Source._meta.get_field("name").max_length)
    description = forms.CharField(required=False, max_length=Source._meta.get_field("description").max_length)
    active = forms.BooleanField(required=False)
    make_default = forms.BooleanField(required=False, label="Make it the default source")


def source_choices() -> list[tuple[str, str]]:
    """The sources an upload or a new slide may name (the active ones; blank: the lab's default)."""
    default = source_default()  # made here if none exists yet (a flushed database)
    rows = list(sources_list(active=True).values_list("pk", "name"))
    return [("", f"The default source ({default.name})")] + [(str(pk), name) for pk, name in rows]


class SourceChoiceField(forms.ChoiceField):
    """An optional choice of an active source for upload and slide forms; its choices are read when the
    form is made. Cleaned to the source's id as text, or "" for the default."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "Source (microscope/camera)")
        super().__init__(choices=source_choices, **kwargs)
