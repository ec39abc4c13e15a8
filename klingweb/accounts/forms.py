"""Forms of accounts: teams, roles, invitations, Kling credentials, sign-up.

Secret keys and API keys: the ``secret_key`` and ``api_key`` fields are password inputs that
never render their value back (``render_value=False``), so a form redisplayed with errors does
not echo them.
"""

from __future__ import annotations

import zoneinfo
from functools import cache
from urllib.parse import urlparse

from django import forms
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.forms import PasswordChangeForm, UserCreationForm
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from klingweb.accounts.models import (
    ROLE_RANK,
    CredentialKind,
    KlingAccount,
    Membership,
    Region,
    Role,
    Team,
)
from klingweb.safe_text import refuse_control_characters


@cache
def time_zone_choices() -> list[tuple[str, str]]:
    """IANA time-zone names, sorted, as form choices (UTC first)."""
    names = sorted(zoneinfo.available_timezones() - {"UTC", "localtime"})
    return [("UTC", "UTC")] + [(name, name) for name in names]


def allowed_custom_base_urls() -> set[str]:
    """Custom base URLs a team admin may enter: ``settings.KLING_CUSTOM_BASE_URLS`` plus the
    operator's own ``KLING_API_BASE_URL`` (so the sandbox works out of the box)."""
    allowed = {u.rstrip("/") for u in settings.KLING_CUSTOM_BASE_URLS}
    allowed.add(settings.KLING_API_BASE_URL.rstrip("/"))
    return allowed


class SearchableChoiceInput(forms.TextInput):
    """A text box that suggests the field's choices as the person types (an HTML
    ``<datalist>``): ~600 time-zone names become searchable ("berl" → Europe/Berlin) instead
    of a long ``<select>``. The field (a ``ChoiceField``) still accepts only its choices."""

    def __init__(self, attrs: dict | None = None, choices=()):
        super().__init__({"autocomplete": "off", "spellcheck": "false", **(attrs or {})})
        self.choices = choices

    def render(self, name, value, attrs=None, renderer=None) -> str:
        """The ``<input list=…>`` followed by its ``<datalist>`` of every choice."""
        attrs = dict(attrs or {})
        list_id = f"{attrs.get('id') or 'id_' + name}-options"
        attrs["list"] = list_id
        box = super().render(name, value, attrs, renderer)
        options = format_html_join(
            "", '<option value="{}"></option>', ((v,) for v, _ in self.choices)
        )
        return format_html('{}<datalist id="{}">{}</datalist>', box, list_id, options)


class TeamForm(forms.ModelForm):
    """Create or rename a team; ``time_zone`` sets the day boundaries of usage reports."""

    time_zone = forms.ChoiceField(
        choices=time_zone_choices,
        initial="UTC",
        widget=SearchableChoiceInput,
        help_text="Days in usage reports and budgets start at midnight in this time zone "
        "(type to search: a city or region, e.g. “Berlin”).",
        error_messages={"invalid_choice": "Choose a time zone from the list, e.g. Europe/Berlin."},
    )

    class Meta:
        model = Team
        fields = ["name", "time_zone"]

    def clean_name(self) -> str:
        """Refuse control characters (a line break in a team name broke every mail naming
        the team, and tabs split the CSV exports' cells)."""
        name = self.cleaned_data["name"]
        refuse_control_characters(name)
        return name


def role_choices_for(actor: Membership | None) -> list[tuple[str, str]]:
    """The roles ``actor`` may grant: all for owners, admin and below for admins."""
    if actor is not None and actor.role == Role.OWNER:
        return list(Role.choices)
    return [
        (value, label) for value, label in Role.choices if ROLE_RANK[value] <= ROLE_RANK[Role.ADMIN]
    ]


class RoleForm(forms.Form):
    """Change a member's role (the roles offered depend on the acting member)."""

    role = forms.ChoiceField(choices=Role.choices)

    def __init__(self, *args, actor: Membership | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = role_choices_for(actor)


class InvitationForm(forms.Form):
    """Invite an e-mail address to the team with a role."""

    email = forms.EmailField(
        max_length=254,
        error_messages={"invalid": "Enter a valid e-mail address, like name@example.com."},
    )
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def __init__(self, *args, actor: Membership | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = role_choices_for(actor)


def _printable_key(value: str, label: str) -> None:
    """Refuse a key holding spaces, control or non-ASCII characters: it travels in an HTTP
    header (API key) or signs a token exactly as typed."""
    if not all(33 <= ord(char) <= 126 for char in value):
        raise forms.ValidationError(
            f"The {label} holds spaces or characters Kling keys never have; paste it again "
            "from the Kling console."
        )


class KlingAccountForm(forms.ModelForm):
    """Add or edit a team's Kling credentials, of either kind (KLING_API_2026.md §2).

    ``credential_kind``: ``api_key`` (the ``api_key`` field, sent as ``Authorization: Bearer
    <key>``) or ``access_key`` (``access_key`` + ``secret_key``, a JWT; legacy design only).
    The key of the chosen kind is required when adding or when changing kind; when editing
    an account of the same kind, blank keeps the stored one. Typing the other kind's keys
    too is refused (one account, one credential). The view stores keys with
    ``services.account_set_api_key`` / ``account_set_secret`` (Fernet), never in clear.
    ``cleaned_data["credential_changed"]``: True when the credential (or base URL) changes.
    """

    credential_kind = forms.ChoiceField(
        choices=CredentialKind.choices,
        initial=CredentialKind.API_KEY,
        widget=forms.RadioSelect,
        label="Credential",
        help_text="Kling's console now issues API keys; access key + secret key pairs work "
        "on the legacy API only.",
    )
    custom_base_url = forms.URLField(
        required=False,
        max_length=200,
        assume_scheme="https",
        label="Custom base URL",
        help_text="Only for the custom region, e.g. http://127.0.0.1:8700.",
    )
    api_key = forms.CharField(
        required=False,
        strip=True,
        max_length=500,
        label="API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted; only its last 4 characters are shown again.",
    )
    secret_key = forms.CharField(
        required=False,
        strip=True,
        max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted; never shown again.",
    )

    class Meta:
        model = KlingAccount
        fields = ["name", "region", "custom_base_url", "access_key"]
        help_texts = {
            "region": "Credentials of one region do not work on the other.",
            "access_key": "Only for an access key + secret key account.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        order = ["name", "region", "custom_base_url", "credential_kind", "api_key"]
        self.order_fields(order + ["access_key", "secret_key"])
        self.fields["access_key"].required = False
        instance = self.instance
        if instance.pk:
            self.fields["credential_kind"].initial = instance.credential_kind
            if instance.api_key_encrypted:
                self.fields["api_key"].help_text = (
                    f"Stored, ending in …{instance.api_key_last4}. "
                    "Leave blank to keep it; type a new one to replace it."
                )
            if instance.secret_key_encrypted:
                self.fields["secret_key"].help_text = (
                    f"Stored, ending in …{instance.secret_key_last4}. "
                    "Leave blank to keep it; type a new one to replace it."
                )

    def clean_api_key(self) -> str:
        """The API key as typed, checked for characters a header cannot carry."""
        value = self.cleaned_data.get("api_key") or ""
        if value:
            _printable_key(value, "API key")
        return value

    def clean_secret_key(self) -> str:
        """The secret key as typed, checked like the API key."""
        value = self.cleaned_data.get("secret_key") or ""
        if value:
            _printable_key(value, "secret key")
        return value

    def clean(self) -> dict:
        """Check the custom URL (http/https with a host) and that the chosen kind's keys
        exist (typed, or stored for the same kind) and the other kind's are not typed."""
        data = super().clean()
        region = data.get("region")
        url = (data.get("custom_base_url") or "").strip()
        if region == Region.CUSTOM:
            parsed = urlparse(url)
            if "custom_base_url" in self.errors:
                pass  # the URL field said what is wrong already
            elif not url:
                self.add_error("custom_base_url", "The custom region needs a base URL.")
            elif parsed.scheme not in ("http", "https") or not parsed.netloc:
                self.add_error("custom_base_url", "Use an http:// or https:// URL with a host.")
            elif url.rstrip("/") not in allowed_custom_base_urls():
                # The server calls this URL with the account's credential: an arbitrary one
                # would let a team admin make the portal call into its own network.
                self.add_error(
                    "custom_base_url",
                    "This base URL is not allowed here; ask the operator to add it to "
                    "KLING_CUSTOM_BASE_URLS.",
                )
            else:
                data["custom_base_url"] = url.rstrip("/")
        else:
            data["custom_base_url"] = ""
        kind = data.get("credential_kind")
        instance = self.instance
        same_kind = bool(instance.pk) and instance.credential_kind == kind
        access_key = (data.get("access_key") or "").strip()
        data["access_key"] = access_key
        if kind == CredentialKind.API_KEY:
            if access_key or data.get("secret_key"):
                self.add_error(
                    "credential_kind",
                    "An API-key account has no access key or secret key: clear those fields, "
                    "or choose “Access key + secret key”.",
                )
            elif not data.get("api_key") and not (same_kind and instance.api_key_encrypted):
                self.add_error("api_key", "Enter the API key.")
        elif kind == CredentialKind.ACCESS_KEY:
            if data.get("api_key"):
                self.add_error(
                    "credential_kind",
                    "An access key + secret key account has no API key: clear the API key, "
                    "or choose “API key”.",
                )
            else:
                if not access_key:
                    self.add_error("access_key", "Enter the access key.")
                if not data.get("secret_key") and not (same_kind and instance.secret_key_encrypted):
                    self.add_error("secret_key", "Enter the secret key.")
        data["credential_changed"] = (
            not same_kind
            or bool(data.get("api_key") or data.get("secret_key"))
            or (kind == CredentialKind.ACCESS_KEY and access_key != instance.access_key)
            or "region" in self.changed_data
            or "custom_base_url" in self.changed_data
        )
        return data


class InvitationSignupForm(UserCreationForm):
    """A new person's username and password, when accepting an invitation."""

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username",)


class SignupForm(UserCreationForm):
    """Open sign-up (only when ``settings.ALLOW_SIGNUP``): username, e-mail, password."""

    email = forms.EmailField(
        max_length=254,
        error_messages={"invalid": "Enter a valid e-mail address, like name@example.com."},
    )

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_email(self) -> str:
        """Refuse an e-mail address another account already uses."""
        email = self.cleaned_data["email"]
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(
                "An account with this e-mail exists already; sign in or reset its password."
            )
        return email


class ThrottledPasswordChangeForm(PasswordChangeForm):
    """Django's change-password form whose old-password check is a sign-in: it goes through
    ``authenticate`` with the request, so django-axes counts a wrong old password as a failed
    sign-in of that username from that IP and refuses while the pair (or the IP) is locked.
    Someone holding a stolen session cannot use the form to guess the password.
    """

    def __init__(self, user, *args, request: HttpRequest | None = None, **kwargs):
        super().__init__(user, *args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        """The old password, checked by ``authenticate`` (throttled); else a form error."""
        old_password = self.cleaned_data["old_password"]
        user = authenticate(self.request, username=self.user.get_username(), password=old_password)
        if user is None or user.pk != self.user.pk:
            raise forms.ValidationError(
                self.error_messages["password_incorrect"], code="password_incorrect"
            )
        return old_password
