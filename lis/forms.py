from django import forms

from .models import Destination


class DestinationForm(forms.Form):
    """A destination, for adding one or changing it (the bearer token left blank stays as it was)."""

    name = forms.CharField(max_length=60)
    kind = forms.ChoiceField(choices=Destination.Kind.choices)
    active = forms.BooleanField(required=False, initial=True)
    host = forms.CharField(required=False, max_length=255, help_text="MLLP: the LIS's host name or address.")
    port = forms.IntegerField(required=False, min_value=1, max_value=65535, help_text="MLLP: its port (often 2575).")
    tls = forms.BooleanField(required=False, label="TLS")
    sending_application = forms.CharField(required=False, max_length=20, initial="LEUKOPORTAL")
    sending_facility = forms.CharField(required=False, max_length=20)
    receiving_application = forms.CharField(required=False, max_length=20)
    receiving_facility = forms.CharField(required=False, max_length=20)
    base_url = forms.CharField(required=False, max_length=500, label="FHIR base URL")
    bearer_token = forms.CharField(required=False, max_length=500, widget=forms.PasswordInput(render_value=False),
                                   help_text="FHIR: sent as 'Authorization: Bearer ...'; blank keeps the one set.")
    timeout_s = forms.FloatField(required=False, min_value=0.1, label="Time-out (s)")
    max_attempts = forms.IntegerField(required=False, min_value=1, label="Attempts")
    backoff_s = forms.FloatField(required=False, min_value=0.1, label="First retry after (s)")
    backoff_max_s = forms.FloatField(required=False, min_value=0.1, label="Longest wait (s)")
