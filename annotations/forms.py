from django import forms

from sources.forms import SourceChoiceField

from .deid import deidentified_code_problem
from .models import CellClass, Split


class SampleCodeField(forms.CharField):
    def validate(self, value):
        super().validate(value)
        if value:
            problem = deidentified_code_problem(value)
            if problem:
                raise forms.ValidationError(problem)


class UploadForm(forms.Form):
    split = forms.ChoiceField(choices=Split.choices, initial=Split.TRAIN)
    sample_code = SampleCodeField(required=False, max_length=40, help_text="Optional de-identified sample code.")
    acquisition_source = SourceChoiceField()


class CellClassForm(forms.ModelForm):
    class Meta:
        model = CellClass
        fields = ["code", "name", "hotkey", "display_order", "active", "is_leukocyte"]


class SplitMoveForm(forms.Form):
    split = forms.ChoiceField(choices=Split.choices)


def _label_choices():
    return [(c.code, c.name) for c in CellClass.objects.filter(active=True, is_abstain=False).order_by("display_order", "code")]


class LabelForm(forms.Form):
    """One expert's reading of one cell (the single-cell page; works without JavaScript)."""

    cell_class = forms.ChoiceField(choices=(), widget=forms.RadioSelect)
    unsure = forms.BooleanField(required=False, label="Not sure")
    model_version = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cell_class"].choices = _label_choices()


class AdjudicationForm(forms.Form):
    """A reviewer's decision: nothing is preselected (no anchoring on a reader's class), so an empty
    choice is refused rather than taken as the first class."""

    cell_class = forms.ChoiceField(choices=(), error_messages={
        "required": "Nothing decided: choose the final class (nothing is preselected)."})
    note = forms.CharField(required=False, max_length=500)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cell_class"].choices = _label_choices()


class LabSettingsForm(forms.Form):
    labels_required_train = forms.IntegerField(min_value=1, max_value=5, label="Independent labels needed, training cells")
    labels_required_heldout = forms.IntegerField(min_value=1, max_value=5, label="Independent labels needed, held-out cells")
    blind_heldout = forms.BooleanField(required=False, label="Blind mode on held-out cells (hide the model's suggestion)")
    slides_train = forms.BooleanField(
        required=False, label="Cells verified on slides train the next model (how it adapts to this lab's microscope)")
    two_step_release = forms.BooleanField(
        required=False, label="Two-step release of slides: a technologist verifies and submits, a second reviewer "
                              "releases")


class AgreementFilterForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    split = forms.ChoiceField(required=False, choices=[("", "all")] + list(Split.choices))

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data


class AuditFilterForm(forms.Form):
    """The audit log's filters; every one is optional and they combine."""

    action = forms.CharField(required=False, max_length=40, help_text="Part of the action, e.g. model or rollback.")
    user = forms.CharField(required=False, max_length=150, help_text="Part of the user name.")
    target = forms.CharField(required=False, max_length=110,
                             help_text="A target type and/or id, e.g. ModelVersion, 12 or CellImage 12.")
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From")
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To")

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data
