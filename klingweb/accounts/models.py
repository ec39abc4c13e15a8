"""Teams, memberships, invitations and Kling accounts.

Every piece of work in the portal belongs to a ``Team``; people reach a team through a
``Membership`` whose role decides what they may do. A team's tasks go to a ``KlingAccount``:
its own credentials if an admin added them, else the operator's default account (credentials
from the environment, see ``KlingAccount.objects.operator_default``).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    """A member's role in a team, strongest first. See ``ROLE_RANK`` for comparisons."""

    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


#: Higher is stronger: ``ROLE_RANK[a] >= ROLE_RANK[b]`` means role ``a`` may do what ``b`` may.
ROLE_RANK: dict[str, int] = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Region(models.TextChoices):
    """Where a Kling account lives; credentials of one region do not work on another."""

    SINGAPORE = "singapore", "Singapore (global)"
    BEIJING = "beijing", "Beijing (China)"
    CUSTOM = "custom", "Custom base URL"


#: Base URL per region (KLING_API.md §1).
REGION_BASE_URLS: dict[str, str] = {
    Region.SINGAPORE: "https://api-singapore.klingai.com",
    Region.BEIJING: "https://api-beijing.klingai.com",
}


class CredentialKind(models.TextChoices):
    """How a Kling account authenticates (KLING_API_2026.md §2): an API key, sent as
    ``Authorization: Bearer <key>`` (both API designs), or an access key + secret key pair
    signing a JWT (the legacy design only)."""

    API_KEY = "api_key", "API key"
    ACCESS_KEY = "access_key", "Access key + secret key"


def operator_credentials_set() -> bool:
    """True when the environment gives the operator default account a credential:
    ``KLING_API_KEY``, or ``KLING_ACCESS_KEY`` (with ``KLING_SECRET_KEY``)."""
    return bool(getattr(settings, "KLING_API_KEY", "") or settings.KLING_ACCESS_KEY)


class KlingAccountQuerySet(models.QuerySet):
    """Queries over Kling accounts."""

    def with_credentials(self) -> KlingAccountQuerySet:
        """Teams' accounts holding a stored credential of their kind (an API key, or an
        access key and a secret key). The operator default is not among them."""
        api = models.Q(credential_kind=CredentialKind.API_KEY) & ~models.Q(api_key_encrypted="")
        pair = (
            models.Q(credential_kind=CredentialKind.ACCESS_KEY)
            & ~models.Q(access_key="")
            & ~models.Q(secret_key_encrypted="")
        )
        return self.filter(is_operator_default=False).filter(api | pair)

    def operator_default(self) -> KlingAccount:
        """Return the single row standing for the operator's default account, creating it.

        Its credentials are never stored: they come from ``KLING_API_KEY``, or
        ``KLING_ACCESS_KEY`` / ``KLING_SECRET_KEY``, and ``KLING_API_BASE_URL`` each time a
        client is built. The row
        exists so tasks can point at it and so a pause (codes 1100–1102) can be recorded.
        """
        account, _ = self.get_or_create(
            is_operator_default=True,
            defaults={"name": "Operator default", "region": Region.CUSTOM},
        )
        return account


class KlingAccount(models.Model):
    """A set of Kling API credentials of one ``credential_kind``: an API key
    (``api_key_encrypted``, Fernet, shown only as ``api_key_last4``) or an access key + secret
    key (``access_key`` in clear, ``secret_key_encrypted``, shown as ``secret_key_last4``).

    ``credential_hash``: SHA-256 hex of the whole credential (kind, base URL, key, secret;
    ``klingweb.accounts.services.credential_hash``), written whenever the credential is set;
    resource packs and connection tests are keyed by it, so what one credential fetched is
    never shown for another. Blank on rows older than the field until the resource-pack job
    has read them once.
    ``team`` is null for the operator's default account. ``paused_*`` is set when the vendor
    answered 1100/1101/1102 (account exception, arrears, resource pack used up): submissions
    for this account wait until an admin clears it.
    ``unified_serves_legacy`` / ``unified_checked_at``: what the poller last learnt about
    whether the 2026 design's ``GET /tasks?task_ids=`` answers this account's legacy ``/v1``
    tasks (the vendor's pages are silent, KLING_API_2026.md §3): ``None`` never asked, ``True``
    it answered some, ``False`` it answered none of those asked (then the list pages are
    used, and the question is asked again a day after ``unified_checked_at``). Written by
    ``tasks_app.finder.tasks_find`` only.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(
        "accounts.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="kling_accounts",
    )
    is_operator_default = models.BooleanField(default=False)
    name = models.CharField(max_length=100)
    region = models.CharField(max_length=20, choices=Region.choices, default=Region.SINGAPORE)
    custom_base_url = models.URLField(blank=True)
    credential_kind = models.CharField(
        max_length=20, choices=CredentialKind.choices, default=CredentialKind.ACCESS_KEY
    )
    api_key_encrypted = models.TextField(blank=True, help_text="Fernet token; never shown.")
    api_key_last4 = models.CharField(max_length=4, blank=True)
    access_key = models.CharField(max_length=200, blank=True)
    secret_key_encrypted = models.TextField(blank=True, help_text="Fernet token; never shown.")
    secret_key_last4 = models.CharField(max_length=4, blank=True)
    credential_hash = models.CharField(max_length=64, blank=True)
    paused_code = models.IntegerField(null=True, blank=True)
    paused_message = models.TextField(blank=True)
    paused_request_id = models.CharField(max_length=100, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    unified_serves_legacy = models.BooleanField(
        null=True,
        blank=True,
        help_text="Did GET /tasks answer this account's legacy tasks when last asked? "
        "Unknown until the poller's first probe.",
    )
    unified_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = KlingAccountQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["is_operator_default"],
                condition=models.Q(is_operator_default=True),
                name="one_operator_default_account",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def base_url(self) -> str:
        """The API base URL (no trailing slash) for this account."""
        if self.is_operator_default:
            return settings.KLING_API_BASE_URL
        if self.region == Region.CUSTOM:
            return self.custom_base_url.rstrip("/")
        return REGION_BASE_URLS[self.region]

    @property
    def kind(self) -> str:
        """The ``CredentialKind`` value in force; for the operator default, what the
        environment sets (``KLING_API_KEY`` → API key)."""
        if self.is_operator_default:
            api_key = getattr(settings, "KLING_API_KEY", "")
            return CredentialKind.API_KEY if api_key else CredentialKind.ACCESS_KEY
        return self.credential_kind

    @property
    def uses_api_key(self) -> bool:
        """True when this account authenticates with an API key (Bearer)."""
        return self.kind == CredentialKind.API_KEY

    @property
    def is_paused(self) -> bool:
        """True while submissions for this account are held (see ``paused_code``)."""
        return self.paused_at is not None


class Team(models.Model):
    """A group of people sharing tasks, elements, a budget and usage reports.

    ``kling_account`` is the account the team's new tasks go to; null means the operator's
    default account. ``time_zone`` (IANA name) sets day boundaries in usage reports.

    ``settings_version`` counts changes to what a team's pages show of its settings: its
    members and their roles, its budgets, its name and zone, a member's username. Every
    writer of those bumps it in its own transaction through ONE function,
    ``klingweb.accounts.services.team_settings_touch`` (the portal's services, the admin,
    the management commands); a cached usage page is keyed by it, so the next load after
    such a change renders afresh.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    time_zone = models.CharField(max_length=64, default="UTC")
    kling_account = models.ForeignKey(
        KlingAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    settings_version = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's place in a team, with a ``Role``; unique per (user, team).

    ``code`` is the public identifier used in member URLs (change role, remove).
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team")
        ]
        ordering = ["team__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"

    def has_role(self, minimum: str) -> bool:
        """True when this membership's role is at least ``minimum`` (a ``Role`` value)."""
        return ROLE_RANK[self.role] >= ROLE_RANK[minimum]

    @property
    def can_write(self) -> bool:
        """Members and up create tasks and elements; viewers only read."""
        return self.has_role(Role.MEMBER)

    @property
    def can_admin(self) -> bool:
        """Admins and owners manage members, credentials and budgets."""
        return self.has_role(Role.ADMIN)


class Invitation(models.Model):
    """An e-mailed, single-use invitation to join a team with a role.

    Only a SHA-256 hash of the token is stored; the token itself lives in the e-mailed link.
    Valid while not accepted, not revoked and before ``expires_at`` (7 days by default).
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Invitation of {self.email} to {self.team}"

    @property
    def status(self) -> str:
        """``accepted``, ``revoked``, ``expired`` or ``pending`` (for lists and the admin)."""
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"

    @property
    def is_pending(self) -> bool:
        """True while the invitation can still be accepted."""
        return (
            self.accepted_at is None
            and self.revoked_at is None
            and self.expires_at > timezone.now()
        )


class VendorCallKind(models.TextChoices):
    """The admin actions that need the vendor's answer and run as a job (DESIGN.md §2.6)."""

    ACCOUNT_TEST = "account_test", "Test connection"
    PRESETS_SYNC = "presets_sync", "Presets sync"
    ELEMENTS_IMPORT = "elements_import", "Elements import"
    ELEMENT_DELETE = "element_delete", "Element delete"


class VendorCallStatus(models.TextChoices):
    """Where a vendor call is: ``pending`` (queued), ``running`` (a job claimed it),
    ``done`` (the vendor answered yes) or ``failed`` (vendor refusal, network failure,
    unreadable credentials, or given up as abandoned)."""

    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class VendorCallError(models.TextChoices):
    """Why a call failed: Kling answered with an error (``vendor``: code, message,
    request_id), no answer arrived (``network``: refused connection, timeout), the portal
    could not build a client (``setup``: unreadable secret, no credentials), the call is moot
    (``refused``: e.g. the element was deleted meanwhile), no job finished it in time
    (``abandoned``), or the portal itself failed (``internal``: a bug, logged by the
    cluster)."""

    VENDOR = "vendor", "Kling refused"
    NETWORK = "network", "Kling not reachable"
    SETUP = "setup", "Credentials problem"
    REFUSED = "refused", "Not possible"
    ABANDONED = "abandoned", "No answer"
    INTERNAL = "internal", "Portal error"


#: Statuses of a call that may still change.
VENDOR_CALL_UNFINISHED = (VendorCallStatus.PENDING, VendorCallStatus.RUNNING)


def vendor_call_stale_after() -> timedelta:
    """How long a call may stay unfinished before it counts as abandoned (its job died, or
    no cluster runs): the cluster's ``retry`` in seconds (larger than its ``timeout``, so a
    live job has been killed by then)."""
    cluster = getattr(settings, "Q_CLUSTER", {}) or {}
    return timedelta(seconds=int(cluster.get("retry") or cluster.get("timeout") or 360))


class VendorCall(models.Model):
    """One admin action that calls Kling, run by a job while the page polls its status.

    ``kind`` (``VendorCallKind``) and ``subject`` (the public code of what it acts on — a
    Kling account or an element — or ``""`` for the team as a whole) name the action; at most
    one unfinished call per (team, kind, subject) is started (``vendor_call_start``).
    ``result``: the success summary as JSON (``{"summary": str, ...}``; resource packs for
    a connection test, counts for sync/import). ``error_*``: the answer on failure —
    ``error_kind`` (``VendorCallError``), ``error_code`` (vendor code, None for a network
    failure), ``error_http_status``, ``error_message``, ``error_request_id``. Times are
    aware UTC datetimes.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="vendor_calls")
    kind = models.CharField(max_length=20, choices=VendorCallKind.choices)
    subject = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=10, choices=VendorCallStatus.choices, default=VendorCallStatus.PENDING
    )
    result = models.JSONField(default=dict, blank=True)
    error_kind = models.CharField(max_length=10, choices=VendorCallError.choices, blank=True)
    error_code = models.IntegerField(null=True, blank=True)
    error_http_status = models.IntegerField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    error_request_id = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["team", "kind", "subject", "-created_at"])]
        constraints = [
            # A double click or a second tab joins the running call instead of starting one.
            models.UniqueConstraint(
                fields=["team", "kind", "subject"],
                condition=models.Q(status__in=["pending", "running"]),
                name="one_unfinished_vendor_call",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.status})"

    @property
    def is_finished(self) -> bool:
        """True once the call is ``done`` or ``failed`` (its status partial stops polling)."""
        return self.status not in VENDOR_CALL_UNFINISHED

    @property
    def is_stale(self) -> bool:
        """True when unfinished and older than ``vendor_call_stale_after()``: the page then
        stops polling and offers to start the action again."""
        return not self.is_finished and timezone.now() - self.created_at > vendor_call_stale_after()

    @property
    def age_seconds(self) -> int:
        """Whole seconds since the call was started (``created_at``)."""
        return max(0, int((timezone.now() - self.created_at).total_seconds()))
