"""Services of accounts: teams and memberships, invitations, Kling accounts.

Every function that a view calls for a state change lives here; each raises an
``AccountsError`` subclass (its text is fit to show the user) and changes nothing when it
refuses.

Invitations: the e-mailed link carries a random token (``secrets.token_urlsafe``, 256 bits);
only its SHA-256 hex digest is stored (``Invitation.token_hash``), so a database leak does not
leak usable links. A token is single use: acceptance claims the row with a conditional update.

Kling accounts: secret-key and API-key encryption and building API clients.

Secret keys and API keys are encrypted with Fernet (``cryptography``) under ``settings.FERNET_KEYS``, a
comma-separated list, newest first, read through ``MultiFernet``: encryption uses the first
key, decryption tries each. Rotation: put a new key first, run
``python manage.py rotate_kling_secrets`` (re-encrypts every stored secret and API key with the
new key),
then drop the old key. Without ``FERNET_KEYS`` (development) a key is derived from
``SECRET_KEY``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone

from klingweb.accounts.models import (
    ROLE_RANK,
    VENDOR_CALL_UNFINISHED,
    CredentialKind,
    Invitation,
    KlingAccount,
    Membership,
    Role,
    Team,
    VendorCall,
    VendorCallError,
    VendorCallKind,
    VendorCallStatus,
    vendor_call_stale_after,
)
from klingweb.kling import ErrorClass, KlingClient, KlingError, ResourcePack
from klingweb.safe_text import mail_subject

log = logging.getLogger(__name__)


class SecretUnreadable(Exception):
    """A stored secret key cannot be decrypted with any configured Fernet key."""


def _fernet() -> MultiFernet:
    keys = list(settings.FERNET_KEYS)
    if not keys:
        digest = hashlib.sha256(("klingweb-fernet:" + settings.SECRET_KEY).encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(f"FERNET_KEYS holds an invalid Fernet key: {exc}") from None


def secret_encrypt(plain: str) -> str:
    """Return the Fernet token (ASCII text) for ``plain`` under the newest key."""
    return _fernet().encrypt(plain.encode()).decode()


def secret_decrypt(token: str) -> str:
    """Return the plain text of a Fernet ``token``; raises ``SecretUnreadable``."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("The stored secret key cannot be decrypted; re-enter it.") from None


def secret_rotate(token: str) -> str:
    """Return ``token`` re-encrypted under the newest key (MultiFernet.rotate)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("The stored secret key cannot be decrypted; re-enter it.") from None


def credential_hash(*, kind: str, base_url: str, key: str, secret: str = "") -> str:
    """SHA-256 hex (64 chars) of a whole credential: ``kind`` (``CredentialKind``), the base
    URL, the API key or access key, and the secret key (``""`` for an API key). What the
    portal learnt through one credential (resource packs, a connection test) is keyed by it,
    so two accounts sharing an access key but not a secret never share results (issue 14
    item 7). The keys are long random strings: the hash reveals nothing usable."""
    material = "\0".join([kind, base_url.rstrip("/"), key, secret])
    return hashlib.sha256(material.encode()).hexdigest()


def account_set_secret(*, account: KlingAccount, secret_key: str) -> None:
    """Make ``account`` an access key + secret key account: store ``secret_key`` encrypted,
    keep its last 4 characters to show, and forget any API key. ``account.access_key`` must
    be set already. Does not save; the caller saves the account."""
    account.credential_kind = CredentialKind.ACCESS_KEY
    account.secret_key_encrypted = secret_encrypt(secret_key)
    account.secret_key_last4 = secret_key[-4:]
    account.api_key_encrypted = ""
    account.api_key_last4 = ""
    account.credential_hash = credential_hash(
        kind=CredentialKind.ACCESS_KEY,
        base_url=account.base_url,
        key=account.access_key,
        secret=secret_key,
    )


def account_set_api_key(*, account: KlingAccount, api_key: str) -> None:
    """Make ``account`` an API-key account (sent as ``Authorization: Bearer <api_key>``,
    KLING_API_2026.md §2): store the key encrypted like a secret key, keep its last 4
    characters to show, and forget any access key and secret key. Does not save."""
    account.credential_kind = CredentialKind.API_KEY
    account.api_key_encrypted = secret_encrypt(api_key)
    account.api_key_last4 = api_key[-4:]
    account.access_key = ""
    account.secret_key_encrypted = ""
    account.secret_key_last4 = ""
    account.credential_hash = credential_hash(
        kind=CredentialKind.API_KEY, base_url=account.base_url, key=api_key
    )


def account_refresh_hash(*, account: KlingAccount) -> None:
    """Recompute ``account.credential_hash`` from its stored credential (a base URL changed
    by an edit). Does not save. Raises ``SecretUnreadable``."""
    credentials = account_credentials(account)
    account.credential_hash = credential_hash(
        kind=account.kind,
        base_url=account.base_url,
        key=credentials.get("api_key") or credentials.get("access_key", ""),
        secret=credentials.get("secret_key", ""),
    )


def account_for_team(*, team: Team) -> KlingAccount:
    """The Kling account a team's new tasks go to: its own, else the operator default."""
    if team.kling_account_id is not None:
        return team.kling_account
    return KlingAccount.objects.operator_default()


def account_credentials(account: KlingAccount) -> dict[str, str]:
    """The keyword arguments of ``KlingClient`` for ``account``'s credential:
    ``{"api_key": ...}`` or ``{"access_key": ..., "secret_key": ...}``.

    The operator default reads ``KLING_API_KEY``, else ``KLING_ACCESS_KEY`` /
    ``KLING_SECRET_KEY`` (settings refuse both kinds at start-up). Raises
    ``SecretUnreadable`` when a stored key cannot be decrypted, and
    ``ImproperlyConfigured`` when the operator default has no credentials.
    """
    if account.is_operator_default:
        api_key = getattr(settings, "KLING_API_KEY", "")
        if api_key:
            return {"api_key": api_key}
        if not settings.KLING_ACCESS_KEY:
            raise ImproperlyConfigured(
                "No Kling credentials: set KLING_API_KEY, or KLING_ACCESS_KEY and "
                "KLING_SECRET_KEY, or add credentials to the team."
            )
        return {"access_key": settings.KLING_ACCESS_KEY, "secret_key": settings.KLING_SECRET_KEY}
    if account.credential_kind == CredentialKind.API_KEY:
        return {"api_key": secret_decrypt(account.api_key_encrypted)}
    return {
        "access_key": account.access_key,
        "secret_key": secret_decrypt(account.secret_key_encrypted),
    }


def account_credential_hash(account: KlingAccount) -> str:
    """``credential_hash`` of ``account``'s credential as it is now: for the operator
    default computed from the environment, else the stored one (``""`` for a row saved
    before the field existed). No decryption, no Kling call."""
    if not account.is_operator_default:
        return account.credential_hash
    try:
        credentials = account_credentials(account)
    except ImproperlyConfigured:
        return ""
    return credential_hash(
        kind=account.kind,
        base_url=account.base_url,
        key=credentials.get("api_key") or credentials.get("access_key", ""),
        secret=credentials.get("secret_key", ""),
    )


_clients: dict[tuple[str, str], KlingClient] = {}
_clients_lock = threading.Lock()


def kling_client_for(account: KlingAccount) -> KlingClient:
    """Return a ``KlingClient`` for ``account``, shared per whole credential in this process.

    Sharing keeps one cached JWT and one connection pool per account. An API-key account
    sends the key itself as the bearer; an access key + secret key account a JWT
    (``account_credentials`` says which, and how the operator default is read). Raises
    ``SecretUnreadable`` when a stored key cannot be decrypted, and ``ImproperlyConfigured``
    when the operator default has no credentials.
    """
    credentials = account_credentials(account)
    base_url = account.base_url
    digest = credential_hash(
        kind=CredentialKind.API_KEY if "api_key" in credentials else CredentialKind.ACCESS_KEY,
        base_url=base_url,
        key=credentials.get("api_key") or credentials.get("access_key", ""),
        secret=credentials.get("secret_key", ""),
    )
    key = (base_url, digest)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = KlingClient(
                **credentials,
                base_url=base_url,
                connect_timeout=settings.KLING_CONNECT_TIMEOUT,
                read_timeout=settings.KLING_READ_TIMEOUT,
            )
            _clients[key] = client
        return client


# --- Refusals -----------------------------------------------------------------------------


class AccountsError(Exception):
    """A request the accounts rules refuse; ``str(exc)`` is a message fit to show the user."""


class LastOwnerError(AccountsError):
    """The change would leave a team without an owner."""


class AlreadyMemberError(AccountsError):
    """The person is already a member of the team (duplicate membership)."""


class RoleNotAllowed(AccountsError):
    """The acting member may not grant this role or change this member."""


class InvitationInvalid(AccountsError):
    """The invitation token is unknown, expired, already used or revoked."""


# --- Teams and memberships ----------------------------------------------------------------


def team_settings_touch(*, team_ids: Iterable[int]) -> None:
    """Bump ``Team.settings_version`` of the teams ``team_ids`` (primary keys; unknown ones
    are skipped) in the caller's transaction: what their pages show of their settings changed
    (members or roles, budgets, name or zone, a member's username). The ONE place that
    versions a team's settings: every writer of those calls it in the transaction of its
    write — these services, ``tasks_app.budgets.budget_set``/``budget_remove``, the admin
    (``klingweb.accounts.admin``), ``demo_data`` — so a cached usage page keyed by the
    version (``klingweb.reporting.views.usage_team``) is drawn afresh on the next load.

    Several teams are locked in id order first (two callers touching overlapping teams
    cannot deadlock); one team is one UPDATE. No signals: a write that bypasses the
    services (a raw UPDATE, a shell) must call it too."""
    ids = sorted(set(team_ids))
    if not ids:
        return
    with transaction.atomic(savepoint=False):
        teams = Team.objects.filter(pk__in=ids)
        if len(ids) > 1:
            list(teams.select_for_update().order_by("pk").values_list("pk", flat=True))
        teams.update(settings_version=F("settings_version") + 1)


def team_create(*, name: str, owner: AbstractBaseUser, time_zone: str = "UTC") -> Team:
    """Create a team named ``name`` and make ``owner`` its first owner; returns the team."""
    with transaction.atomic():
        team = Team.objects.create(name=name, time_zone=time_zone)
        Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    return team


def team_update(*, team: Team, name: str, time_zone: str) -> Team:
    """Rename ``team`` and set its ``time_zone`` (an IANA name the caller validated, e.g.
    ``TeamForm``), bumping its settings version in the same transaction
    (``team_settings_touch``). Returns the saved team. After a change of zone, usage
    rollups keep their old days until ``rollups_rebuild`` runs (README)."""
    with transaction.atomic():
        team.name, team.time_zone = name, time_zone
        team.save(update_fields=["name", "time_zone"])
        team_settings_touch(team_ids=[team.pk])
    return team


def role_assignable(*, actor: Membership, role: str) -> bool:
    """True when ``actor`` may grant ``role``: owners any role, admins up to admin."""
    if not actor.can_admin:
        return False
    return actor.role == Role.OWNER or ROLE_RANK[role] <= ROLE_RANK[Role.ADMIN]


def _check_may_manage(*, actor: Membership, target: Membership) -> None:
    """Raise ``RoleNotAllowed`` unless ``actor`` may change or remove ``target``."""
    if not actor.can_admin:
        raise RoleNotAllowed("Only admins and owners can manage members.")
    if target.role == Role.OWNER and actor.role != Role.OWNER:
        raise RoleNotAllowed("Only an owner can change or remove another owner.")


def _check_not_last_owner(*, membership: Membership) -> None:
    """Raise ``LastOwnerError`` when ``membership`` is its team's only owner.

    Locks the team's owner rows (``select_for_update``, a no-op on SQLite) so two owners
    demoting each other at once cannot both succeed; call inside ``transaction.atomic``.
    """
    if membership.role != Role.OWNER:
        return
    owners = list(
        Membership.objects.select_for_update()
        .filter(team_id=membership.team_id, role=Role.OWNER)
        .values_list("pk", flat=True)
    )
    if owners == [membership.pk] or not owners:
        raise LastOwnerError(
            f"{membership.user} is the last owner of {membership.team}: "
            "make someone else an owner first."
        )


def membership_set_role(*, membership: Membership, role: str, actor: Membership) -> Membership:
    """Give ``membership`` the ``Role`` value ``role``, acting as ``actor``.

    Raises ``RoleNotAllowed`` (admins cannot grant owner or touch owners), ``LastOwnerError``
    (demoting the last owner). Returns the saved membership; the team's settings version is
    bumped in the same transaction (``team_settings_touch``).
    """
    if role not in ROLE_RANK:
        raise RoleNotAllowed(f"Unknown role {role!r}.")
    _check_may_manage(actor=actor, target=membership)
    if not role_assignable(actor=actor, role=role):
        raise RoleNotAllowed("Only an owner can make someone an owner.")
    with transaction.atomic():
        if role != Role.OWNER:
            _check_not_last_owner(membership=membership)
        membership.role = role
        membership.save(update_fields=["role"])
        team_settings_touch(team_ids=[membership.team_id])
    return membership


def membership_remove(*, membership: Membership, actor: Membership) -> None:
    """Remove ``membership`` from its team, acting as ``actor`` (a member leaving: itself).

    Raises ``RoleNotAllowed`` (an admin removing an owner), ``LastOwnerError``. The team's
    settings version is bumped in the same transaction (``team_settings_touch``).
    """
    if actor.pk != membership.pk:
        _check_may_manage(actor=actor, target=membership)
    with transaction.atomic():
        _check_not_last_owner(membership=membership)
        membership.delete()
        team_settings_touch(team_ids=[membership.team_id])


# --- Invitations --------------------------------------------------------------------------


def invitation_token_hash(token: str) -> str:
    """The SHA-256 hex digest (64 chars) stored for an invitation ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_create(
    *, team: Team, email: str, role: str, actor: Membership
) -> tuple[Invitation, str]:
    """Create an invitation of ``email`` to ``team`` with ``role``; returns (row, token).

    The token is returned once, for the e-mailed link; only its hash is stored. Expires after
    ``settings.INVITATION_DAYS`` days. Raises ``RoleNotAllowed``, ``AlreadyMemberError``
    (a user with that e-mail is in the team), ``AccountsError`` (a pending invitation for
    that e-mail exists already).
    """
    email = get_user_model().objects.normalize_email(email.strip())
    if not role_assignable(actor=actor, role=role):
        raise RoleNotAllowed("Only an owner can invite an owner.")
    if Membership.objects.filter(team=team, user__email__iexact=email).exists():
        raise AlreadyMemberError(f"{email} is already a member of {team}.")
    pending = Invitation.objects.filter(
        team=team,
        email__iexact=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    )
    if pending.exists():
        raise AccountsError(
            f"{email} already has a pending invitation; revoke it to send a new one."
        )
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        team=team,
        email=email,
        role=role,
        token_hash=invitation_token_hash(token),
        invited_by=actor.user,
        expires_at=timezone.now() + timedelta(days=settings.INVITATION_DAYS),
    )
    return invitation, token


def invitation_send(*, invitation: Invitation, accept_url: str) -> None:
    """E-mail ``accept_url`` (which carries the token) to the invited address.

    Uses ``settings.EMAIL_BACKEND`` (console by default); mail errors propagate
    (``OSError``/``smtplib.SMTPException``) so the caller can roll the invitation back.
    """
    context = {
        "invitation": invitation,
        "accept_url": accept_url,
        "days": settings.INVITATION_DAYS,
    }
    # One line whatever the team's name holds (a line break made send_mail refuse the header).
    subject = mail_subject(render_to_string("accounts/invitation_subject.txt", context))
    body = render_to_string("accounts/invitation_email.txt", context)
    send_mail(subject, body, None, [invitation.email])


def invitation_check(*, token: str, lock: bool = False) -> Invitation:
    """Return the invitation of ``token`` if it can still be accepted.

    Raises ``InvitationInvalid`` saying why not: unknown, revoked, already used, expired.
    ``lock`` selects the row for update (inside ``transaction.atomic``).
    """
    queryset = Invitation.objects.select_related("team")
    if lock:
        queryset = queryset.select_for_update(of=("self",))
    invitation = queryset.filter(token_hash=invitation_token_hash(token)).first()
    if invitation is None:
        raise InvitationInvalid(
            "This invitation link is not valid. Check that you copied the whole link."
        )
    if invitation.revoked_at is not None:
        raise InvitationInvalid("This invitation was revoked. Ask a team admin for a new one.")
    if invitation.accepted_at is not None:
        raise InvitationInvalid("This invitation has already been used.")
    if invitation.expires_at <= timezone.now():
        raise InvitationInvalid(
            f"This invitation expired on {invitation.expires_at:%Y-%m-%d %H:%M} UTC. "
            "Ask a team admin for a new one."
        )
    return invitation


class InvitationForOtherAddress(AccountsError):
    """The signed-in user's e-mail is not the invited address."""


def invitation_email_matches(*, invitation: Invitation, user: AbstractBaseUser) -> bool:
    """True when ``user``'s e-mail is the invited address (compared case-insensitively)."""
    email = (getattr(user, "email", "") or "").strip()
    return bool(email) and email.casefold() == invitation.email.strip().casefold()


def invitation_accept(*, token: str, user: AbstractBaseUser) -> Membership:
    """Accept the invitation of ``token`` as ``user``; returns the new membership.

    The invitation binds to its address: ``user``'s e-mail must be the invited one (any
    case), so a link that reaches someone else is of no use to them. Single use: the row is
    claimed with a conditional update, so two requests with the same token cannot both join.
    Raises ``InvitationInvalid``, ``InvitationForOtherAddress``, ``AlreadyMemberError``
    (nothing changes: the invitation stays pending). The team's settings version is bumped
    with the new membership (``team_settings_touch``).
    """
    with transaction.atomic():
        invitation = invitation_check(token=token, lock=True)
        if Membership.objects.filter(team=invitation.team, user=user).exists():
            raise AlreadyMemberError(f"You are already a member of {invitation.team}.")
        if not invitation_email_matches(invitation=invitation, user=user):
            raise InvitationForOtherAddress(
                f"This invitation is for {invitation.email}, and you are signed in as "
                f"{user.get_username()} with another e-mail address. Sign out, then accept it "
                "with the account of that address (or create one)."
            )
        now = timezone.now()
        claimed = Invitation.objects.filter(
            pk=invitation.pk,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=now,
        ).update(accepted_at=now, accepted_by=user)
        if claimed != 1:
            raise InvitationInvalid("This invitation has already been used.")
        membership = Membership.objects.create(
            team=invitation.team, user=user, role=invitation.role
        )
        team_settings_touch(team_ids=[invitation.team_id])
        return membership


def invitation_accept_new_user(
    *, token: str, username: str, password: str
) -> tuple[AbstractBaseUser, Membership]:
    """Create a user (``username``, the invited e-mail, ``password``) and accept as them.

    All or nothing: if the invitation cannot be accepted, no user is created. Raises
    ``InvitationInvalid``; ``AccountsError`` when a user with the invited e-mail exists (they
    should sign in and accept instead). The caller validates username and password.
    """
    with transaction.atomic():
        invitation = invitation_check(token=token, lock=True)
        users = get_user_model().objects
        if users.filter(email__iexact=invitation.email).exists():
            raise AccountsError(
                f"An account with the e-mail {invitation.email} exists already: "
                "sign in with it, then accept the invitation."
            )
        user = users.create_user(username=username, email=invitation.email, password=password)
        membership = invitation_accept(token=token, user=user)
    return user, membership


def invitation_revoke(*, invitation: Invitation) -> None:
    """Revoke a pending invitation; its link stops working at once.

    Raises ``AccountsError`` when it is no longer pending (accepted, revoked or expired).
    """
    revoked = Invitation.objects.filter(
        pk=invitation.pk,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    ).update(revoked_at=timezone.now())
    if revoked != 1:
        raise AccountsError(f"The invitation of {invitation.email} is no longer pending.")


# --- Kling accounts -----------------------------------------------------------------------


class AccountUntested(AccountsError):
    """Switching the team to an account whose last connection test failed, or that was never
    tested with its current credentials, needs an explicit confirmation."""


def account_test_state(*, team: Team, account: KlingAccount) -> str:
    """How ``account``'s credentials fared in their last "Test connection" call in ``team``:
    ``"passed"``, ``"failed"``, ``"running"`` (started, no answer yet) or ``"untested"``
    (never tested, or tested with a credential that has changed since: the call's result
    carries the ``credential_hash`` it tested)."""
    call = vendor_call_latest(
        team=team, kind=VendorCallKind.ACCOUNT_TEST, subject=str(account.code)
    )
    if call is None:
        return "untested"
    if not call.is_finished:
        return "untested" if call.is_stale else "running"
    if call.status != VendorCallStatus.DONE:
        return "failed"
    tested = (call.result or {}).get("credential_hash")
    return "passed" if tested and tested == account.credential_hash else "untested"


def account_use(*, team: Team, account: KlingAccount | None, confirmed: bool = False) -> None:
    """Make ``account`` (one of ``team``'s, or None for the operator default) the team's.

    Queued tasks follow: a task is bound to an account only once its create call is sent
    (``tasks_app.submission.task_submit``), and tasks waiting on a paused account are sent
    through the new one at the poller's next cycle (``tasks_app.submission.
    tasks_submit_due``), without waiting out their recheck delay. Raises ``AccountsError`` for another team's
    account, and ``AccountUntested`` (nothing changes) when ``account``'s last connection
    test did not pass with its current credentials (``account_test_state``) unless
    ``confirmed``.
    """
    if account is not None and account.team_id != team.pk:
        raise AccountsError("That Kling account belongs to another team.")
    if account is not None and not confirmed:
        state = account_test_state(team=team, account=account)
        if state != "passed":
            reason = {
                "failed": "its last connection test failed",
                "running": "its connection test has not answered yet",
            }.get(state, "it has not been tested with its current credentials")
            raise AccountUntested(
                f"{account.name} was not switched to: {reason}. Test the connection first, "
                "or confirm to use it anyway (tasks may wait if Kling refuses it)."
            )
    team.kling_account = account
    team.save(update_fields=["kling_account"])


def account_unpause(*, account: KlingAccount) -> bool:
    """Clear the pause recorded on ``account`` (codes 1100–1102); False if it was not paused.

    Queued tasks waiting on the account are submitted again at the poller's next cycle
    (``tasks_app.submission.tasks_submit_due``).
    """
    cleared = KlingAccount.objects.filter(pk=account.pk, paused_at__isnull=False).update(
        paused_at=None, paused_code=None, paused_message="", paused_request_id=""
    )
    account.refresh_from_db()
    return cleared == 1


#: Days of account costs "Test connection" asks for.
ACCOUNT_TEST_DAYS = 30


def account_test(*, account: KlingAccount) -> list[ResourcePack]:
    """Call the account-costs endpoint (KLING_API.md §5.5) for the last 30 days.

    Returns the resource packs (quantities in Kling credit units). Raises ``KlingError``
    (vendor code, message, request_id), ``SecretUnreadable``, ``ImproperlyConfigured``
    (operator default without credentials).
    """
    client = kling_client_for(account)
    end = timezone.now()
    return client.account_costs(start_time=end - timedelta(days=ACCOUNT_TEST_DAYS), end_time=end)


def account_test_result(packs: list[ResourcePack], *, credential_hash: str = "") -> dict:
    """The JSON kept on a finished connection test: ``{"summary": str, "credential_hash":
    str (the tested credential, ``KlingAccount.credential_hash``), "packs": [{
    "resource_pack_name", "resource_pack_type", "status", "remaining_quantity",
    "total_quantity" (Kling units, as decimal strings), "effective_date", "invalid_date"
    ("YYYY-MM-DD" UTC or "")}, ...]}``."""

    def day(value: Any) -> str:
        return value.strftime("%Y-%m-%d") if value is not None else ""

    return {
        "summary": f"Connected. Resource packs of the last {ACCOUNT_TEST_DAYS} days: {len(packs)}.",
        "credential_hash": credential_hash,
        "packs": [
            {
                "resource_pack_name": p.resource_pack_name,
                "resource_pack_type": p.resource_pack_type,
                "status": p.status,
                "remaining_quantity": str(p.remaining_quantity),
                "total_quantity": str(p.total_quantity),
                "effective_date": day(p.effective_time),
                "invalid_date": day(p.invalid_time),
            }
            for p in packs
        ],
    }


def account_test_for_call(*, call: VendorCall) -> dict:
    """The work of a "Test connection" call (job ``klingweb.accounts.jobs.connection_test``):
    ``account_test`` on the team's account whose code is ``call.subject``; returns
    ``account_test_result``. Raises ``VendorCallRefused`` when the account is gone, and what
    ``account_test`` raises."""
    account = KlingAccount.objects.filter(team_id=call.team_id, code=call.subject).first()
    if account is None:
        raise VendorCallRefused("This Kling account no longer exists.")
    if not account.credential_hash:
        # A row saved before credential hashes existed: compute its hash once.
        account_refresh_hash(account=account)
        KlingAccount.objects.filter(pk=account.pk, credential_hash="").update(
            credential_hash=account.credential_hash
        )
    tested = account.credential_hash
    return account_test_result(account_test(account=account), credential_hash=tested)


# --- Vendor calls: admin actions that need Kling's answer, run as jobs ---------------------


class VendorCallRefused(Exception):
    """The work of a vendor call is not possible (e.g. its object is gone); ``str(exc)`` is
    shown to the user. Nothing was sent to Kling."""


def vendor_call_latest(*, team: Team, kind: str, subject: str = "") -> VendorCall | None:
    """The newest call of ``kind`` on ``subject`` (a public code, or ``""``) in ``team``."""
    return (
        VendorCall.objects.filter(team=team, kind=kind, subject=str(subject))
        .order_by("-created_at", "-pk")
        .first()
    )


def vendor_call_start(
    *, team: Team, kind: str, subject: str = "", user: Any, job: str
) -> tuple[VendorCall, bool]:
    """Start the vendor call ``kind`` on ``subject`` for ``team``, or join the one running.

    ``job``: dotted path of the django-q2 job that does the work, called with the call's
    primary key once this transaction commits (``async_task(job, call.pk)``). An unfinished
    call of the same (team, kind, subject) younger than ``vendor_call_stale_after()`` is
    returned as it is (double click, second tab); an older one is marked ``failed``
    (``abandoned``) first, so its job — should it still run — does nothing. Returns
    ``(call, started)``; ``started`` is False when an existing call was joined. No Kling call.
    """
    from django_q.tasks import async_task

    subject = str(subject)
    now = timezone.now()
    for _attempt in range(2):
        current = (
            VendorCall.objects.filter(
                team=team, kind=kind, subject=subject, status__in=VENDOR_CALL_UNFINISHED
            )
            .order_by("-created_at")
            .first()
        )
        if current is not None and not current.is_stale:
            return current, False
        try:
            with transaction.atomic():
                if current is not None:
                    minutes = max(1, int(vendor_call_stale_after().total_seconds() // 60))
                    VendorCall.objects.filter(
                        pk=current.pk, status__in=VENDOR_CALL_UNFINISHED
                    ).update(
                        status=VendorCallStatus.FAILED,
                        error_kind=VendorCallError.ABANDONED,
                        error_message=f"No answer after {minutes} minute(s); started again.",
                        finished_at=now,
                    )
                call = VendorCall.objects.create(
                    team=team, kind=kind, subject=subject, created_by=user, created_at=now
                )
                transaction.on_commit(functools.partial(async_task, job, call.pk))
        except IntegrityError:
            # Another request started one between our read and our insert: join it.
            continue
        return call, True
    current = vendor_call_latest(team=team, kind=kind, subject=subject)
    assert current is not None
    return current, False


def vendor_call_run(*, call_pk: int, work: Callable[[VendorCall], dict]) -> VendorCall | None:
    """Run ``work(call)`` for the pending call ``call_pk`` once, and record the answer.

    Claims the call with a conditional update (``pending`` → ``running``), so a second
    delivery of the job, or a call already given up as abandoned, does nothing (returns
    None). ``work`` returns the success JSON (``{"summary": str, ...}``) → ``done``. A
    ``KlingError`` → ``failed`` with the vendor's ``code``, HTTP status, ``message`` and
    ``request_id`` (``error_kind`` ``vendor``), or ``network`` when no answer arrived;
    ``SecretUnreadable`` / ``ImproperlyConfigured`` → ``setup``; ``VendorCallRefused`` →
    ``refused``. Any other exception is recorded as ``failed`` (``internal``) and re-raised
    (the cluster logs it). Returns the call as recorded.
    """
    now = timezone.now()
    claimed = VendorCall.objects.filter(pk=call_pk, status=VendorCallStatus.PENDING).update(
        status=VendorCallStatus.RUNNING, started_at=now
    )
    if claimed != 1:
        log.info("vendor call %s: not pending any more; not running it again", call_pk)
        return None
    call = VendorCall.objects.select_related("team").get(pk=call_pk)
    fields: dict[str, Any]
    failure: BaseException | None = None
    try:
        result = work(call)
    except KlingError as exc:
        network = exc.error_class == ErrorClass.NETWORK and exc.http_status is None
        fields = {
            "error_kind": VendorCallError.NETWORK if network else VendorCallError.VENDOR,
            "error_code": exc.code,
            "error_http_status": exc.http_status,
            "error_message": str(exc.message or exc)[:2000],
            "error_request_id": str(exc.request_id or "")[:100],
        }
    except (SecretUnreadable, ImproperlyConfigured) as exc:
        fields = {"error_kind": VendorCallError.SETUP, "error_message": str(exc)}
    except VendorCallRefused as exc:
        fields = {"error_kind": VendorCallError.REFUSED, "error_message": str(exc)}
    except Exception as exc:
        failure = exc
        fields = {
            "error_kind": VendorCallError.INTERNAL,
            "error_message": "The portal failed while doing this; the error is in its log.",
        }
    else:
        fields = {"status": VendorCallStatus.DONE, "result": result or {}}
    fields.setdefault("status", VendorCallStatus.FAILED)
    fields["finished_at"] = timezone.now()
    if not VendorCall.objects.filter(pk=call_pk, status=VendorCallStatus.RUNNING).update(**fields):
        log.warning("vendor call %s: given up meanwhile; its answer is not recorded", call_pk)
    if failure is not None:
        raise failure
    call.refresh_from_db()
    return call


def secrets_rotate_all() -> tuple[int, list[KlingAccount]]:
    """Re-encrypt every stored secret key and API key under the newest ``FERNET_KEYS`` key.

    Returns (rotated count, accounts whose key no configured key can read). A row edited
    meanwhile is left alone (conditional update on the old ciphertext).
    """
    rotated = 0
    unreadable: list[KlingAccount] = []
    for field in ("secret_key_encrypted", "api_key_encrypted"):
        for account in KlingAccount.objects.exclude(**{field: ""}).order_by("pk"):
            old = getattr(account, field)
            try:
                new = secret_rotate(old)
            except SecretUnreadable:
                unreadable.append(account)
                continue
            rotated += KlingAccount.objects.filter(pk=account.pk, **{field: old}).update(
                **{field: new}
            )
    return rotated, unreadable
