from django import forms

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


class CellClassForm(forms.ModelForm):
    class Meta:
        model = CellClass
        fields = ["code", "name", "hotkey", "display_order", "active", "is_leukocyte"]


class SplitMoveForm(forms.Form):
    split = forms.ChoiceField(choices=Split.choices)
