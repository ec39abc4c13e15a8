"""Views of accounts: the home page, teams, members, invitations, Kling credentials, sign-up.

Every team-scoped view starts with an access helper (``team_for_user``/``object_for_user``):
anonymous → login redirect, outsider → 404, role too weak → 403, wrong method → 405. State
changes are POST only (CSRF-protected by Django's middleware). A settings POST sent by HTMX
answers with the changed section (``accounts/settings.html#<section>``) carrying its notice;
without HTMX it redirects to the settings page with a message.
"""

from __future__ import annotations

import logging
import smtplib
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django_htmx.http import HttpResponseClientRedirect

from klingweb import throttle
from klingweb.accounts import services
from klingweb.accounts.access import (
    READ,
    READ_WRITE,
    WRITE,
    TeamAccess,
    object_for_user,
    require_login,
    require_methods,
    team_for_user,
    user_teams,
)
from klingweb.accounts.forms import (
    InvitationForm,
    InvitationSignupForm,
    KlingAccountForm,
    RoleForm,
    SignupForm,
    TeamForm,
    ThrottledPasswordChangeForm,
)
from klingweb.accounts.models import (
    CredentialKind,
    Invitation,
    KlingAccount,
    Membership,
    Role,
    Team,
    VendorCall,
    VendorCallKind,
    VendorCallStatus,
    operator_credentials_set,
)

logger = logging.getLogger(__name__)

#: The sections of the settings page an HTMX request can swap.
SECTIONS = ("team-form", "members", "invitations", "kling-accounts")

_MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


# --- Home and teams -----------------------------------------------------------------------


def home(request: HttpRequest) -> HttpResponse:
    """GET /: send a signed-in user to their first team's task list, else show a welcome.

    Anonymous → login redirect.
    """
    require_login(request)
    require_methods(request, READ)
    first = user_teams(request).order_by("team__name").first()
    if first is not None:
        return redirect("tasks-list", team=first.team.code)
    return render(request, "accounts/no_team.html", {"form": TeamForm()})


def team_create(request: HttpRequest) -> HttpResponse:
    """GET/POST /accounts/teams/new/: any signed-in user creates a team and becomes its owner.

    Anonymous → login redirect; other methods → 405. Success → the new team's settings.
    """
    require_login(request)
    require_methods(request, READ_WRITE)
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        team = services.team_create(
            name=form.cleaned_data["name"],
            time_zone=form.cleaned_data["time_zone"],
            owner=request.user,
        )
        messages.success(request, f"Team {team.name} created. You are its owner.")
        return redirect("accounts-settings", team=team.code)
    return render(request, "accounts/team_create.html", {"form": form})


def _settings_context(request: HttpRequest, access: TeamAccess, **extra: Any) -> dict:
    """The context of the settings page (and of each of its sections)."""
    team = access.team
    members = list(team.memberships.select_related("user").order_by("user__username"))
    for m in members:
        # Only owners touch owners; one removes oneself with "Leave team", not "Remove".
        m.can_change_role = access.can_admin and (m.role != Role.OWNER or access.role == Role.OWNER)
        m.can_remove = m.can_change_role and m.pk != access.membership.pk
    context: dict[str, Any] = {
        "access": access,
        "team": team,
        "members": members,
        "owner_count": sum(1 for m in members if m.role == Role.OWNER),
        "role_choices": RoleForm(actor=access.membership).fields["role"].choices,
        "team_form": TeamForm(instance=team),
    }
    if access.can_admin:
        context.update(
            invitations=Invitation.objects.filter(team=team, accepted_at__isnull=True)
            .select_related("invited_by")
            .order_by("-created_at"),
            invitation_form=InvitationForm(actor=access.membership),
            kling_accounts=team.kling_accounts.order_by("name"),
            operator_default_configured=operator_credentials_set(),
        )
    context.update(extra)
    return context


def _section(request: HttpRequest, access: TeamAccess, section: str, **extra: Any) -> HttpResponse:
    """Render one section of the settings page (HTMX) or the whole page."""
    context = _settings_context(request, access, **extra)
    if request.htmx:
        return render(request, f"accounts/settings.html#{section}", context)
    return render(request, "accounts/settings.html", context)


def _done(
    request: HttpRequest, access: TeamAccess, section: str, text: str, *, ok: bool = True
) -> HttpResponse:
    """Finish a settings POST: HTMX → the section with a notice; else message + redirect."""
    if request.htmx:
        notice = {"ok": ok, "text": text, "section": section}
        return _section(request, access, section, notice=notice)
    (messages.success if ok else messages.error)(request, text)
    return redirect("accounts-settings", team=access.team.code)


def team_settings(request: HttpRequest, team: Any) -> HttpResponse:
    """GET /t/<team>/settings/: name, time zone, members; for admins also invitations and
    Kling accounts. Any member may read it (viewers see no controls)."""
    access = team_for_user(request, team)
    return render(request, "accounts/settings.html", _settings_context(request, access))


def team_update(request: HttpRequest, team: Any) -> HttpResponse:
    """POST /t/<team>/settings/team/: rename the team, set its time zone. Admins only.

    HTMX → the ``team-form`` section.
    """
    access = team_for_user(request, team, role=Role.ADMIN, methods=WRITE)
    # A copy, so a refused name does not show up in the page's headings.
    form = TeamForm(request.POST, instance=Team.objects.get(pk=access.team.pk))
    if not form.is_valid():
        return _section(request, access, "team-form", team_form=form)
    services.team_update(
        team=form.instance, name=form.cleaned_data["name"], time_zone=form.cleaned_data["time_zone"]
    )
    return _done(request, access, "team-form", "Team settings saved.")


def member_role(request: HttpRequest, team: Any, member: Any) -> HttpResponse:
    """POST /t/<team>/settings/members/<member>/role/: change a member's role. Admins only;
    only owners grant or take away owner; the last owner cannot be demoted.

    HTMX → the ``members`` section (a full redirect when the caller changed their own role).
    """
    membership, access = object_for_user(
        request,
        Membership.objects.select_related("user", "team"),
        team,
        member,
        role=Role.ADMIN,
        methods=WRITE,
    )
    form = RoleForm(request.POST, actor=access.membership)
    if not form.is_valid():
        return _done(request, access, "members", "Choose one of the roles offered.", ok=False)
    try:
        services.membership_set_role(
            membership=membership, role=form.cleaned_data["role"], actor=access.membership
        )
    except services.AccountsError as exc:
        return _done(request, access, "members", str(exc), ok=False)
    text = f"{membership.user} is now {membership.get_role_display().lower()}."
    if membership.pk == access.membership.pk:
        messages.success(request, text)
        url = reverse("accounts-settings", kwargs={"team": access.team.code})
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    return _done(request, access, "members", text)


def member_remove(request: HttpRequest, team: Any, member: Any) -> HttpResponse:
    """POST /t/<team>/settings/members/<member>/remove/: remove a member. Admins only; only
    owners remove owners; the last owner cannot be removed. HTMX → the ``members`` section."""
    membership, access = object_for_user(
        request,
        Membership.objects.select_related("user", "team"),
        team,
        member,
        role=Role.ADMIN,
        methods=WRITE,
    )
    if membership.pk == access.membership.pk:
        return _done(request, access, "members", "To leave the team, use Leave team.", ok=False)
    try:
        services.membership_remove(membership=membership, actor=access.membership)
    except services.AccountsError as exc:
        return _done(request, access, "members", str(exc), ok=False)
    return _done(request, access, "members", f"{membership.user} was removed from the team.")


def team_leave(request: HttpRequest, team: Any) -> HttpResponse:
    """POST /t/<team>/settings/leave/: the caller leaves the team (any role, viewers too).

    The last owner cannot leave. Success → home (HTMX: ``HX-Redirect``).
    """
    access = team_for_user(request, team, methods=WRITE, write_role=None)
    try:
        services.membership_remove(membership=access.membership, actor=access.membership)
    except services.AccountsError as exc:
        return _done(request, access, "members", str(exc), ok=False)
    messages.success(request, f"You left {access.team.name}.")
    url = reverse("home")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


# --- Invitations --------------------------------------------------------------------------


def _accept_url(request: HttpRequest, token: str) -> str:
    """The absolute accept link for ``token`` (``PUBLIC_BASE_URL`` when set)."""
    path = reverse("accounts-invitation-accept", kwargs={"token": token})
    if settings.PUBLIC_BASE_URL:
        return settings.PUBLIC_BASE_URL + path
    return request.build_absolute_uri(path)


def invitation_create(request: HttpRequest, team: Any) -> HttpResponse:
    """POST /t/<team>/settings/invitations/: invite an e-mail address with a role and e-mail
    the single-use link. Admins only (owners alone may invite owners). Refused with a message
    and no change: invalid e-mail, already a member, already invited, mail failure, too many
    invitations to that address or from this client IP (``settings.THROTTLE_RATES``).
    HTMX → the ``invitations`` section."""
    access = team_for_user(request, team, role=Role.ADMIN, methods=WRITE)
    form = InvitationForm(request.POST, actor=access.membership)
    if not form.is_valid():
        return _section(request, access, "invitations", invitation_form=form)
    if throttle.rates_exceeded(
        (throttle.INVITATION_ADDRESS, form.cleaned_data["email"]),
        (throttle.INVITATION_CLIENT, throttle.client_ip(request)),
    ):
        minutes = throttle.retry_minutes(throttle.INVITATION_ADDRESS, throttle.INVITATION_CLIENT)
        text = (
            "Too many invitations were sent from here or to this address; nothing was sent. "
            f"Try again in about {minutes} minutes."
        )
        return _done(request, access, "invitations", text, ok=False)
    try:
        with transaction.atomic():
            invitation, token = services.invitation_create(
                team=access.team,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                actor=access.membership,
            )
            services.invitation_send(invitation=invitation, accept_url=_accept_url(request, token))
    except services.AccountsError as exc:
        return _done(request, access, "invitations", str(exc), ok=False)
    except (OSError, smtplib.SMTPException) as exc:
        logger.warning("Invitation e-mail to %s failed: %s", form.cleaned_data["email"], exc)
        text = "The invitation e-mail could not be sent; nothing was saved. Try again later."
        return _done(request, access, "invitations", text, ok=False)
    text = f"Invitation sent to {invitation.email} as {invitation.get_role_display().lower()}."
    return _done(request, access, "invitations", text)


def invitation_revoke(request: HttpRequest, team: Any, invitation: Any) -> HttpResponse:
    """POST /t/<team>/settings/invitations/<invitation>/revoke/: revoke a pending invitation.
    Admins only. HTMX → the ``invitations`` section."""
    row, access = object_for_user(
        request, Invitation.objects.all(), team, invitation, role=Role.ADMIN, methods=WRITE
    )
    try:
        services.invitation_revoke(invitation=row)
    except services.AccountsError as exc:
        return _done(request, access, "invitations", str(exc), ok=False)
    return _done(request, access, "invitations", f"The invitation of {row.email} was revoked.")


@never_cache
@sensitive_post_parameters("password1", "password2")
def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    """GET/POST /accounts/invitations/<token>/: public by design (the token is the key).

    GET shows the team and role, or why the link no longer works (unknown, expired, used,
    revoked). POST by a signed-in user whose e-mail is the invited address (any case) joins as
    that user — anyone else signed in is refused and told to sign out; POST by an anonymous
    person creates an account (username + password, the invited e-mail) and joins. Success →
    the team's tasks. Nothing changes on a refusal.
    """
    require_methods(request, READ_WRITE)
    try:
        invitation = services.invitation_check(token=token)
    except services.InvitationInvalid as exc:
        return render(request, "accounts/invitation_invalid.html", {"reason": str(exc)})
    signed_in = request.user.is_authenticated
    form = InvitationSignupForm(
        request.POST if request.method == "POST" and not signed_in else None
    )
    context = {
        "invitation": invitation,
        "form": form,
        "token": token,
        # The invitation binds to its address: another signed-in person cannot use it.
        "wrong_user": signed_in
        and not services.invitation_email_matches(invitation=invitation, user=request.user),
    }
    if request.method != "POST":
        return render(request, "accounts/invitation_accept.html", context)
    try:
        if signed_in:
            membership = services.invitation_accept(token=token, user=request.user)
        else:
            if not form.is_valid():
                return render(request, "accounts/invitation_accept.html", context)
            user, membership = services.invitation_accept_new_user(
                token=token,
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
            )
            login(request, user, backend=_MODEL_BACKEND)
    except services.InvitationInvalid as exc:
        return render(request, "accounts/invitation_invalid.html", {"reason": str(exc)})
    except services.AccountsError as exc:
        context["error"] = str(exc)
        return render(request, "accounts/invitation_accept.html", context)
    messages.success(
        request,
        f"Welcome to {membership.team.name}! You joined as "
        f"{membership.get_role_display().lower()}.",
    )
    return redirect("tasks-list", team=membership.team.code)


@never_cache
@sensitive_post_parameters("password1", "password2")
def signup(request: HttpRequest) -> HttpResponse:
    """GET/POST /accounts/signup/: open sign-up, only when ``settings.ALLOW_SIGNUP``.

    Off (the default) → 404: people join through invitations. A signed-in user → home.
    """
    if not settings.ALLOW_SIGNUP:
        raise Http404("Sign-up is closed; ask a team admin for an invitation.")
    require_methods(request, READ_WRITE)
    if request.user.is_authenticated:
        return redirect("home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend=_MODEL_BACKEND)
        messages.success(request, "Welcome! Create a team, or ask for an invitation to one.")
        return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


# --- Kling accounts -----------------------------------------------------------------------


def _kling_account(request: HttpRequest, team: Any, account: Any, methods=WRITE):
    """The team's Kling account ``account`` for an admin of ``team``, or refuse."""
    return object_for_user(
        request, KlingAccount.objects.all(), team, account, role=Role.ADMIN, methods=methods
    )


def _kling_store_credential(row: KlingAccount, form: KlingAccountForm) -> None:
    """Store the credential typed in ``form`` on ``row`` (encrypted), or keep the stored one
    and recompute its ``credential_hash`` (a changed access key or base URL). Not saved."""
    data = form.cleaned_data
    if data["credential_kind"] == CredentialKind.API_KEY and data["api_key"]:
        services.account_set_api_key(account=row, api_key=data["api_key"])
    elif data["credential_kind"] == CredentialKind.ACCESS_KEY and data["secret_key"]:
        services.account_set_secret(account=row, secret_key=data["secret_key"])
    else:
        services.account_refresh_hash(account=row)


@sensitive_post_parameters("secret_key", "api_key")
def kling_create(request: HttpRequest, team: Any) -> HttpResponse:
    """GET/POST /t/<team>/settings/kling/new/: add Kling credentials — an API key, or an
    access key + secret key (``KlingAccountForm``). Admins only.

    The key is stored encrypted (Fernet) and shown again only by its last 4 characters.
    Adding an account does not switch the team to it: the account page offers "Test
    connection", and switching to an account whose test did not pass needs a confirmation
    (``services.account_use``).
    """
    access = team_for_user(request, team, role=Role.ADMIN, methods=READ_WRITE)
    form = KlingAccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        account = form.save(commit=False)
        account.team = access.team
        _kling_store_credential(account, form)
        account.save()
        messages.success(
            request,
            f"Kling account {account.name} added. Test the connection, then use it for the team.",
        )
        return redirect("accounts-kling-detail", team=access.team.code, account=account.code)
    return render(
        request, "accounts/kling_form.html", {"access": access, "team": access.team, "form": form}
    )


def _kling_context(access: TeamAccess, account: KlingAccount, **extra: Any) -> dict:
    """The account page's context. A connection test that passed with another credential
    than the account's current one is not shown (its resource packs are another key's)."""
    call = extra.pop("test_call", None) or services.vendor_call_latest(
        team=access.team, kind=VendorCallKind.ACCOUNT_TEST, subject=str(account.code)
    )
    state = services.account_test_state(team=access.team, account=account)
    if call is not None and call.status == VendorCallStatus.DONE and state != "passed":
        call = None
    return {
        "access": access,
        "team": access.team,
        "account": account,
        "in_use": access.team.kling_account_id == account.pk,
        "call": call,
        "test_state": state,
        **extra,
    }


@sensitive_post_parameters("secret_key", "api_key")
def kling_detail(request: HttpRequest, team: Any, account: Any) -> HttpResponse:
    """GET/POST /t/<team>/settings/kling/<account>/: show and edit one Kling account.
    Admins only. A blank key keeps the stored one (same kind); keys show as their last 4.
    A changed credential makes the last connection test count as "not tested"."""
    row, access = _kling_account(request, team, account, methods=READ_WRITE)
    form = KlingAccountForm(request.POST or None, instance=row)
    if request.method == "POST" and form.is_valid():
        row = form.save(commit=False)
        try:
            _kling_store_credential(row, form)
        except services.SecretUnreadable as exc:
            form.add_error(None, str(exc))
        else:
            row.save()
            messages.success(request, f"Kling account {row.name} saved.")
            return redirect("accounts-kling-detail", team=access.team.code, account=row.code)
        row.refresh_from_db()
    return render(request, "accounts/kling_detail.html", _kling_context(access, row, form=form))


def kling_use(request: HttpRequest, team: Any, account: Any) -> HttpResponse:
    """POST /t/<team>/settings/kling/<account>/use/: new and queued tasks of the team go to
    this account. Admins only. HTMX → the ``kling-accounts`` section.

    An account whose last connection test failed, is still running or never ran (with its
    current credentials) is switched to only with ``confirm=1`` in the POST; without it
    nothing changes and the answer says why and offers "Use anyway" (HTMX: the section with
    that notice, HTTP 200 so htmx swaps it; else the account page, HTTP 409).
    """
    row, access = _kling_account(request, team, account)
    try:
        services.account_use(
            team=access.team, account=row, confirmed=request.POST.get("confirm") == "1"
        )
    except services.AccountUntested as exc:
        if request.htmx:
            notice = {"ok": False, "text": str(exc), "section": "kling-accounts"}
            return _section(request, access, "kling-accounts", notice=notice, confirm_account=row)
        context = _kling_context(access, row, form=KlingAccountForm(instance=row))
        context.update(confirm_text=str(exc))
        return render(request, "accounts/kling_detail.html", context, status=409)
    return _done(request, access, "kling-accounts", f"The team now uses {row.name}.")


def kling_use_default(request: HttpRequest, team: Any) -> HttpResponse:
    """POST /t/<team>/settings/kling/default/: go back to the operator's default account.
    Admins only. HTMX → the ``kling-accounts`` section."""
    access = team_for_user(request, team, role=Role.ADMIN, methods=WRITE)
    services.account_use(team=access.team, account=None)
    return _done(request, access, "kling-accounts", "The team now uses the operator's account.")


def kling_unpause(request: HttpRequest, team: Any, account: Any) -> HttpResponse:
    """POST /t/<team>/settings/kling/<account>/unpause/: clear a pause (codes 1100–1102)
    so queued tasks are submitted again. Admins only. HTMX → the ``kling-accounts`` section."""
    row, access = _kling_account(request, team, account)
    if services.account_unpause(account=row):
        text, ok = f"The pause of {row.name} was cleared; queued tasks will be sent again.", True
    else:
        text, ok = f"{row.name} was not paused.", False
    return _done(request, access, "kling-accounts", text, ok=ok)


def kling_test(request: HttpRequest, team: Any, account: Any) -> HttpResponse:
    """POST /t/<team>/settings/kling/<account>/test/ (``accounts-kling-test``): start the
    "Test connection" job (account costs of the last 30 days, KLING_API.md §5.5) — or join
    the one already running — and answer at once, without calling Kling. Admins only.

    HTMX → the ``test-result`` section of the account page ("working…", polling the call's
    status partial every second until the resource packs, or the vendor's code, message and
    request_id, are in). Without HTMX → redirect to the account page, which shows the call.
    """
    row, access = _kling_account(request, team, account)
    call, _started = services.vendor_call_start(
        team=access.team,
        kind=VendorCallKind.ACCOUNT_TEST,
        subject=str(row.code),
        user=request.user,
        job="klingweb.accounts.jobs.connection_test",
    )
    if request.htmx:
        context = _kling_context(access, row, test_call=call)
        return render(request, "accounts/kling_detail.html#test-result", context)
    return redirect("accounts-kling-detail", team=access.team.code, account=row.code)


def vendor_call_status(request: HttpRequest, team: Any, call: Any) -> HttpResponse:
    """GET /t/<team>/calls/<call>/ (``accounts-call-status``): the status of one vendor
    call — "working…" with its age while pending or running (the fragment polls this URL
    every second), then the vendor's answer: the success summary (resource packs, counts)
    or the error (code, HTTP status, message, request_id; a network failure; an abandoned
    call with "start again"). HTMX → the fragment ``accounts/_vendor_call.html`` only.

    Readable by team admins and by the member who started the call (others 403; outsiders
    404; methods other than GET/HEAD 405).
    """
    row, access = object_for_user(request, VendorCall.objects.all(), team, call)
    if not (access.can_admin or row.created_by_id == request.user.pk):
        raise PermissionDenied("Only an admin or the person who started it can see this.")
    context = {"call": row, "team": access.team}
    if request.htmx:
        return render(request, "accounts/_vendor_call.html", context)
    return render(request, "accounts/vendor_call.html", {"access": access, **context})


# --- Passwords (Django's views, throttled) --------------------------------------------------


class ThrottledPasswordResetView(auth_views.PasswordResetView):
    """GET/POST /accounts/password/reset/: Django's password reset, rate-limited.

    Each valid POST counts once for the address (any case) and once for the client IP
    (``settings.THROTTLE_RATES``: 3 per address and 10 per client per hour). Beyond either
    limit no mail is sent and the form answers 429 with a message; below them the answer is
    Django's "sent" page whether or not an account has that address, so neither reveals
    which addresses exist.
    """

    def form_valid(self, form):
        email = form.cleaned_data["email"]
        if throttle.rates_exceeded(
            (throttle.PASSWORD_RESET_ADDRESS, email),
            (throttle.PASSWORD_RESET_CLIENT, throttle.client_ip(self.request)),
        ):
            minutes = throttle.retry_minutes(
                throttle.PASSWORD_RESET_ADDRESS, throttle.PASSWORD_RESET_CLIENT
            )
            form.add_error(
                None,
                "Too many password-reset requests from here or for this address; no e-mail "
                f"was sent. Try again in about {minutes} minutes.",
            )
            response = self.form_invalid(form)
            response.status_code = 429
            return response
        return super().form_valid(form)


class ThrottledPasswordChangeView(auth_views.PasswordChangeView):
    """GET/POST /accounts/password/change/: Django's change-password page whose old-password
    check shares the sign-in throttle (``ThrottledPasswordChangeForm``): wrong old passwords
    count as failed sign-ins of the user from this IP, and a locked pair or IP gets the
    lockout page (HTTP 429)."""

    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        kwargs["request"] = self.request
        return kwargs
