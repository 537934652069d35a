from django import forms

from .models import AccessSettings


class AccessSettingsForm(forms.ModelForm):
    class Meta:
        model = AccessSettings
        fields = ["idle_timeout_minutes", "idle_warning_minutes", "require_otp_for_signers"]


class OtpTokenForm(forms.Form):
    token = forms.CharField(label="Code", max_length=16, widget=forms.TextInput(
        attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}))
