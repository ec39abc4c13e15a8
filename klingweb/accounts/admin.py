"""Django admin for accounts: teams, memberships, invitations, Kling accounts, vendor calls.

Edits that change what a team's pages show of its settings (a team's name or zone, its
members and roles, a user's username) bump the teams' settings version in the admin's
transaction through ``services.team_settings_touch``, as the portal's own services do: a
cached usage page shows the edit on its next load.

Secrets never appear: ``KlingAccount.secret_key_encrypted`` is excluded (only the last 4
characters show) and a new secret is typed into a password field that is stored through
``services.account_set_secret``. Invitations are created by the portal (it sends the e-mail
and keeps only the token's hash), so the admin can list and revoke them but not add them.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from klingweb.accounts import services
from klingweb.accounts.models import Invitation, KlingAccount, Membership, Team, VendorCall


class MembershipInline(admin.TabularInline):
    """Members of a team, on the team page."""

    model = Membership
    extra = 0
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    raw_id_fields = ("user",)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    """Teams with their member count and Kling account."""

    list_display = ("name", "code", "time_zone", "member_count", "kling_account", "created_at")
    list_filter = ("time_zone", "created_at")
    search_fields = ("name", "code")
    readonly_fields = ("code", "created_at")
    raw_id_fields = ("kling_account",)
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return super().get_queryset(request).annotate(_members=Count("memberships"))

    def save_model(self, request: HttpRequest, obj: Team, form, change: bool) -> None:
        """Save only the fields the form changed: a full save would write back the
        ``settings_version`` read when the form was loaded, undoing a bump made since."""
        if not change:
            super().save_model(request, obj, form, change)
            return
        columns = {f.name for f in obj._meta.concrete_fields}
        obj.save(update_fields=[name for name in form.changed_data if name in columns])

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        """Save the inline memberships, then bump the team's settings version (its name,
        zone or members may have changed), in the admin's transaction."""
        super().save_related(request, form, formsets, change)
        services.team_settings_touch(team_ids=[form.instance.pk])

    @admin.display(description="Members", ordering="_members")
    def member_count(self, obj: Team) -> int:
        """How many people are in the team."""
        return obj._members


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    """Who is in which team with which role."""

    list_display = ("user", "team", "role", "created_at")
    list_filter = ("role", "team")
    search_fields = ("user__username", "user__email", "team__name")
    list_select_related = ("user", "team")
    raw_id_fields = ("user", "team")
    readonly_fields = ("code",)

    def save_model(self, request: HttpRequest, obj: Membership, form, change: bool) -> None:
        """Save, bumping the settings version of the membership's team (and of its former
        team when the edit moved it to another one)."""
        before = (
            list(Membership.objects.filter(pk=obj.pk).values_list("team_id", flat=True))
            if change
            else []
        )
        super().save_model(request, obj, form, change)
        services.team_settings_touch(team_ids=[obj.team_id, *before])

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        """Delete, bumping the settings version of the membership's team."""
        super().delete_model(request, obj)
        services.team_settings_touch(team_ids=[obj.team_id])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        """The "delete selected" action: bump the settings version of every team concerned."""
        team_ids = list(queryset.values_list("team_id", flat=True))
        super().delete_queryset(request, queryset)
        services.team_settings_touch(team_ids=team_ids)


class InvitationStatusFilter(admin.SimpleListFilter):
    """Filter invitations by pending / accepted / revoked / expired."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(s, s.capitalize()) for s in ("pending", "accepted", "revoked", "expired")]

    def queryset(self, request, queryset):
        now = timezone.now()
        value = self.value()
        if value == "accepted":
            return queryset.filter(accepted_at__isnull=False)
        if value == "revoked":
            return queryset.filter(revoked_at__isnull=False, accepted_at__isnull=True)
        open_ = queryset.filter(accepted_at__isnull=True, revoked_at__isnull=True)
        if value == "pending":
            return open_.filter(expires_at__gt=now)
        if value == "expired":
            return open_.filter(expires_at__lte=now)
        return queryset


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Invitations: list, filter, revoke. The token hash is not shown."""

    list_display = ("email", "team", "role", "status", "invited_by", "created_at", "expires_at")
    list_filter = (InvitationStatusFilter, "role", "team")
    search_fields = ("email", "team__name")
    list_select_related = ("team", "invited_by")
    exclude = ("token_hash",)
    readonly_fields = (
        "code",
        "team",
        "email",
        "role",
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "accepted_by",
        "revoked_at",
    )
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected pending invitations")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Invitation]) -> None:
        """Revoke the pending ones among the selected invitations."""
        count = queryset.filter(
            accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
        ).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} invitation(s).", messages.SUCCESS)


class KlingAccountAdminForm(forms.ModelForm):
    """Edit a Kling account; a typed secret key or API key is encrypted (and makes the
    account of that kind), blank keeps the stored one. Typing both is refused."""

    custom_base_url = forms.URLField(required=False, max_length=200, assume_scheme="https")
    new_secret_key = forms.CharField(
        required=False,
        strip=True,
        label="Secret key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave blank to keep the stored one. Stored encrypted; never shown.",
    )
    new_api_key = forms.CharField(
        required=False,
        strip=True,
        label="API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Makes this an API-key account (Bearer). Stored encrypted; never shown.",
    )

    class Meta:
        model = KlingAccount
        # An allow-list: the ciphertext and last-4 columns are never form fields.
        fields = (
            "name",
            "team",
            "is_operator_default",
            "region",
            "custom_base_url",
            "access_key",
            "paused_code",
            "paused_message",
            "paused_request_id",
            "paused_at",
            "created_at",
        )

    def clean(self) -> dict:
        """Refuse a secret key and an API key typed together (one credential per account)."""
        data = super().clean()
        if data.get("new_secret_key") and data.get("new_api_key"):
            raise forms.ValidationError("Type a secret key or an API key, not both.")
        return data

    def save(self, commit: bool = True) -> KlingAccount:
        account = super().save(commit=False)
        if self.cleaned_data.get("new_api_key"):
            services.account_set_api_key(account=account, api_key=self.cleaned_data["new_api_key"])
        elif self.cleaned_data.get("new_secret_key"):
            services.account_set_secret(
                account=account, secret_key=self.cleaned_data["new_secret_key"]
            )
        if commit:
            account.save()
        return account


class PausedFilter(admin.SimpleListFilter):
    """Filter Kling accounts by whether submissions are paused (codes 1100–1102)."""

    title = "paused"
    parameter_name = "paused"

    def lookups(self, request, model_admin):
        return [("yes", "Paused"), ("no", "Not paused")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(paused_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(paused_at__isnull=True)
        return queryset


@admin.register(KlingAccount)
class KlingAccountAdmin(admin.ModelAdmin):
    """Kling credentials; the secret shows only as its last 4 characters."""

    form = KlingAccountAdminForm
    list_display = (
        "name",
        "team",
        "region",
        "base_url",
        "access_key",
        "secret_hint",
        "is_operator_default",
        "paused_code",
        "paused_at",
    )
    list_filter = (PausedFilter, "region", "is_operator_default", "team")
    search_fields = ("name", "access_key", "team__name")
    list_select_related = ("team",)
    exclude = (
        "secret_key_encrypted",
        "secret_key_last4",
        "api_key_encrypted",
        "api_key_last4",
        "credential_hash",
    )
    readonly_fields = ("code", "secret_hint", "created_at")
    raw_id_fields = ("team",)
    actions = ["clear_pause"]

    @method_decorator(sensitive_post_parameters("new_secret_key", "new_api_key"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        """The add/change page; a typed secret key is kept out of error reports."""
        return super().changeform_view(request, object_id, form_url, extra_context)

    @admin.display(description="Secret key")
    def secret_hint(self, obj: KlingAccount) -> str:
        """``API key …abcd`` or ``…abcd`` (the secret's last 4 characters), or a dash."""
        if obj.credential_kind == "api_key":
            return f"API key …{obj.api_key_last4}" if obj.api_key_last4 else "—"
        return f"…{obj.secret_key_last4}" if obj.secret_key_last4 else "—"

    @admin.action(description="Clear the pause of selected accounts")
    def clear_pause(self, request: HttpRequest, queryset: QuerySet[KlingAccount]) -> None:
        """Clear ``paused_*`` so queued tasks of these accounts are submitted again."""
        count = queryset.filter(paused_at__isnull=False).update(
            paused_at=None, paused_code=None, paused_message="", paused_request_id=""
        )
        self.message_user(request, f"Cleared the pause of {count} account(s).", messages.SUCCESS)


@admin.register(VendorCall)
class VendorCallAdmin(admin.ModelAdmin):
    """Admin actions that called Kling from a job ("Test connection", presets sync, element
    delete and import): read-only, to see what failed and the vendor's request_id."""

    list_display = (
        "kind",
        "team",
        "status",
        "error_kind",
        "error_code",
        "error_request_id",
        "created_by",
        "created_at",
        "finished_at",
    )
    list_filter = ("kind", "status", "error_kind")
    search_fields = ("code", "team__name", "error_request_id", "subject")
    raw_id_fields = ("team", "created_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Calls are started from the portal's pages only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: VendorCall | None = None) -> bool:
        """A record of what Kling answered: never edited."""
        return False


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    """Django's user admin, plus: a changed username, or a deleted user (memberships gone,
    ledger rows' member cleared), bumps the settings version of EVERY team, since usage
    pages name members (the picker, budgets, the per-member table, top tasks), former
    members included. Both are rare admin actions; every other user edit bumps nothing."""

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        """Save; a change of username bumps every team's settings version."""
        super().save_model(request, obj, form, change)
        if change and User.USERNAME_FIELD in form.changed_data:
            services.team_settings_touch(team_ids=Team.objects.values_list("pk", flat=True))

    def delete_model(self, request: HttpRequest, obj) -> None:
        """Delete; bumps every team's settings version."""
        super().delete_model(request, obj)
        services.team_settings_touch(team_ids=Team.objects.values_list("pk", flat=True))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """The "delete selected" action; bumps every team's settings version."""
        super().delete_queryset(request, queryset)
        services.team_settings_touch(team_ids=Team.objects.values_list("pk", flat=True))
