"""The form an admin creates a team API key with."""

from __future__ import annotations

from django import forms

from klingweb.api.models import ApiKeyScope


class ApiKeyForm(forms.Form):
    """Name (1–100 characters) and scope (read, or read + write) of a new key."""

    name = forms.CharField(max_length=100, label="Name", help_text="Where it is used.")
    scope = forms.ChoiceField(choices=ApiKeyScope.choices, initial=ApiKeyScope.WRITE, label="Scope")
