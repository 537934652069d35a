from django import forms

from annotations.deid import deidentified_code_problem
from sources.forms import SourceChoiceField

from .detection.scale import MAX_MICRONS_PER_PIXEL as MAX_MPP
from .detection.scale import MIN_MICRONS_PER_PIXEL as MIN_MPP
from .models import ReferenceInterval, Slide


class SlideCreateForm(forms.Form):
    code = forms.CharField(max_length=40, label="Accession code",
                           help_text="De-identified: no names, no dates of birth.")
    kind = forms.ChoiceField(choices=Slide.Kind.choices, initial=Slide.Kind.FIELDS, label="Images are")
    acquisition_source = SourceChoiceField()
    wbc_count = forms.DecimalField(required=False, min_value=0.01, max_value=1000, decimal_places=2,
                                   label="WBC count (10^9/L, optional)")
    target_count = forms.TypedChoiceField(choices=[(t, str(t)) for t in Slide.TARGETS], coerce=int, initial=100,
                                          label="Target count")
    microns_per_pixel = forms.FloatField(required=False, min_value=MIN_MPP, max_value=MAX_MPP,
                                         label="Scale, µm per pixel (optional)",
                                         help_text="Blank: measured on each field's red cells (about 7.5 µm across).")
    notes = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_code(self):
        code = self.cleaned_data["code"].strip()
        problem = deidentified_code_problem(code)
        if problem:
            raise forms.ValidationError(problem)
        return code


class SlideUpdateForm(forms.Form):
    wbc_count = forms.DecimalField(required=False, min_value=0.01, max_value=1000, decimal_places=2,
                                   label="WBC count (10^9/L)")
    target_count = forms.TypedChoiceField(choices=[(t, str(t)) for t in Slide.TARGETS], coerce=int)
    microns_per_pixel = forms.FloatField(required=False, min_value=MIN_MPP, max_value=MAX_MPP,
                                         label="Scale, µm per pixel (blank: measured on the red cells)",
                                         help_text="Applies to the fields processed after the change.")
    notes = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class SignForm(forms.Form):
    reason = forms.CharField(required=False, max_length=500, label="Reason for signing despite the warnings",
                             widget=forms.Textarea(attrs={"rows": 2}))
    comment = forms.CharField(required=False, max_length=2000, strip=False, label="Interpretive comment",
                              widget=forms.Textarea(attrs={"rows": 3}))


class ReleaseForm(forms.Form):
    comment = forms.CharField(required=False, max_length=2000, strip=False, label="Interpretive comment",
                              widget=forms.Textarea(attrs={"rows": 3}))


class ReleaseReturnForm(forms.Form):
    reason = forms.CharField(max_length=500, label="Why it goes back to verification")


class CorrectionForm(forms.Form):
    reason = forms.CharField(max_length=500, label="Reason for the correction")


class ReferenceIntervalForm(forms.ModelForm):
    class Meta:
        model = ReferenceInterval
        fields = ["name", "codes", "measure", "low", "high", "flag_low", "flag_high", "active", "display_order"]
