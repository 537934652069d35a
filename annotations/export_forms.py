"""Forms of the export and import pages (lab admins)."""
from django import forms

from .models import CellClass, Source


def _class_choices():
    return [(c.code, c.name) for c in CellClass.objects.filter(is_abstain=False).order_by("display_order", "code")]


class CellExportForm(forms.Form):
    split = forms.ChoiceField(choices=[("all", "Both"), ("train", "Training"), ("heldout", "Held-out")],
                              initial="all")
    status = forms.ChoiceField(label="Cells", initial="final", choices=[
        ("final", "with a final class"),
        ("adjudicated", "decided by a reviewer's adjudication only"),
        ("all", "all, also those still undecided (folder undecided/)"),
    ])
    classes = forms.MultipleChoiceField(choices=_class_choices, required=False, widget=forms.CheckboxSelectMultiple,
                                        help_text="None ticked: every class.")
    sources = forms.MultipleChoiceField(
        choices=[(Source.CELL, "uploaded cells"), (Source.SLIDE_CELL, "cells verified on slides")],
        initial=[Source.CELL, Source.SLIDE_CELL], widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose uploaded cells, cells verified on slides, or both."})
    start = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))
    date_field = forms.ChoiceField(label="Dates of", initial="uploaded",
                                   choices=[("uploaded", "upload"), ("decided", "the final decision")])
    include_names = forms.BooleanField(required=False, label="Include reader names (otherwise pseudonymous reader ids)")
    include_accessions = forms.BooleanField(required=False, label="Include sample and accession codes")
    progress_token = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)

    def selection_arguments(self) -> dict:
        return {k: self.cleaned_data[k] for k in ("split", "status", "classes", "sources", "start", "end",
                                                   "date_field", "include_names", "include_accessions")}


class CellImportForm(forms.Form):
    READERS = [
        ("match", "readers are users of this portal (matched by name); refuse a reader who is not"),
        ("create", "match readers by name, and create an inactive account (no login, no role) for each one not here"),
        ("one", "record every final class as one user's reading (the original readings are not kept)"),
    ]
    file = forms.FileField(label="Export (.zip)")
    readers = forms.ChoiceField(choices=READERS, initial="match", widget=forms.RadioSelect)
    labelled_by = forms.CharField(required=False, max_length=150, label="That user (for the last choice)")

    def clean(self):
        data = super().clean()
        if data.get("readers") == "one" and not data.get("labelled_by"):
            self.add_error("labelled_by", "Name the user whose readings the final classes become.")
        return data
