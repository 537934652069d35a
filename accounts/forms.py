from django import forms

from .models import AccessSettings


class AccessSettingsForm(forms.ModelForm):
    class Meta:
        model = AccessSettings
        fields = ["idle_timeout_minutes", "idle_warning_minutes"]
