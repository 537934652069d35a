from django import forms
from django.contrib.auth import get_user_model

from annotations.models import CellClass
from sources.models import Source

from . import selectors


class TestBuildForm(forms.Form):
    """The test definition; the class minimums come as ``min_<code>`` fields, one per class."""

    name = forms.CharField(max_length=120)
    size = forms.IntegerField(min_value=1, max_value=500, initial=50)
    pass_min_agreement = forms.FloatField(min_value=0, max_value=1, initial=0.9,
                                          help_text="Overall agreement needed to pass, 0 to 1 (0.9 = 90 %).")
    critical_classes = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                                 help_text="Zero tolerance: one such cell called anything else fails.")
    acquisition_source = forms.ModelChoiceField(queryset=Source.objects.all(), required=False, label="Source",
                                                empty_label="any source")
    decided_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    decided_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    include_heldout = forms.BooleanField(required=False, label="Held-out cells may be used")
    seed = forms.IntegerField(required=False, min_value=0, help_text="Blank: a new seed is chosen (and kept).")

    def __init__(self, *args, counts: list[dict], **kwargs):
        super().__init__(*args, **kwargs)
        self.counts = counts
        self.fields["critical_classes"].choices = [(c["code"], c["name"]) for c in counts]
        for c in counts:
            self.fields[f"min_{c['code']}"] = forms.IntegerField(min_value=0, required=False, initial=0,
                                                                 label=f"{c['name']} ({c['decided']} decided)")

    def minimum_fields(self):
        return [self[f"min_{c['code']}"] for c in self.counts]

    def service_kwargs(self) -> dict:
        d = self.cleaned_data
        return {"name": d["name"], "size": d["size"], "pass_min_agreement": d["pass_min_agreement"],
                "critical_classes": list(d["critical_classes"]), "acquisition_source": d["acquisition_source"],
                "decided_from": d["decided_from"], "decided_to": d["decided_to"],
                "include_heldout": d["include_heldout"], "seed": d["seed"],
                "class_minimums": {c["code"]: d.get(f"min_{c['code']}") or 0 for c in self.counts}}


class AssignForm(forms.Form):
    people = forms.ModelMultipleChoiceField(queryset=get_user_model().objects.none(),
                                            widget=forms.CheckboxSelectMultiple)
    due_date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["people"].queryset = selectors.people_assignable()
        self.fields["people"].label_from_instance = lambda u: u.get_username()


class SignOffForm(forms.Form):
    note = forms.CharField(max_length=500, required=False)


class ModelSitForm(forms.Form):
    model_version = forms.IntegerField(min_value=1)


def class_names() -> dict[str, str]:
    return dict(CellClass.objects.values_list("code", "name"))
