"""The form an admin creates a team API key with."""

from __future__ import annotations

from django import forms

from klingweb.api.models import ApiKeyScope


class ApiKeyForm(forms.Form):
    """Name (1–100 characters) and scope (read, or read + write) of a new key."""

    name = forms.CharField(max_length=100, label="Name", help_text="Where it is used.")
    scope = forms.ChoiceField(choices=ApiKeyScope.choices, initial=ApiKeyScope.WRITE, label="Scope")


class WebhookEndpointForm(forms.Form):
    """URL (http/https, ≤ 2000 characters) and the events to send to it."""

    url = forms.URLField(max_length=2000, label="URL", assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=[],
        widget=forms.CheckboxSelectMultiple,
        label="Events",
    )

    def __init__(self, *args, **kwargs):
        from klingweb.api.models import WebhookEvent

        super().__init__(*args, **kwargs)
        self.fields["events"].choices = WebhookEvent.choices
