"""Access helpers: the first line of every team-scoped view.

Rules (DESIGN.md §3):
- anonymous → redirect to the login page (``LoginRequired``, turned into a redirect by
  ``AccessMiddleware``);
- wrong HTTP method → 405 (``MethodNotAllowed``, turned into ``HttpResponseNotAllowed``);
- a user who is not a member of the team → 404, so outsiders never learn a team or an
  object exists;
- a member whose role is below what the view needs → 403.

The method check runs before the membership check: a wrong method is 405 for everyone,
which reveals nothing about a team because it depends only on the URL pattern.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from klingweb.accounts.models import ROLE_RANK, Membership, Role, Team

READ = ("GET", "HEAD")
WRITE = ("POST",)
READ_WRITE = ("GET", "HEAD", "POST")

M = TypeVar("M", bound=Model)

#: Request attribute where ``team_for_user`` keeps the caller's memberships for the page.
_MEMBERSHIPS_ATTR = "_klingweb_memberships"


class LoginRequired(Exception):
    """Raised for an anonymous request; ``AccessMiddleware`` redirects to the login page."""


class MethodNotAllowed(Exception):
    """Raised for a method the view does not accept; becomes HTTP 405 with ``Allow``."""

    def __init__(self, allowed: Iterable[str]):
        self.allowed = list(allowed)
        super().__init__(", ".join(self.allowed))


@dataclass(frozen=True)
class TeamAccess:
    """What a view learns from ``team_for_user``: the team and the caller's membership."""

    team: Team
    membership: Membership

    @property
    def role(self) -> str:
        """The caller's ``Role`` value in this team."""
        return self.membership.role

    @property
    def can_write(self) -> bool:
        """True for members, admins and owners."""
        return self.membership.can_write

    @property
    def can_admin(self) -> bool:
        """True for admins and owners."""
        return self.membership.can_admin


def require_login(request: HttpRequest) -> None:
    """Raise ``LoginRequired`` unless the request has a signed-in user."""
    if not request.user.is_authenticated:
        raise LoginRequired()


def require_methods(request: HttpRequest, methods: Iterable[str]) -> None:
    """Raise ``MethodNotAllowed`` unless ``request.method`` is one of ``methods``."""
    allowed = tuple(methods)
    if request.method not in allowed:
        raise MethodNotAllowed(allowed)


def team_for_user(
    request: HttpRequest,
    code: Any,
    *,
    role: str = Role.VIEWER,
    methods: Iterable[str] = READ,
    write_role: str | None = Role.MEMBER,
) -> TeamAccess:
    """Return the team with public ``code`` and the caller's membership, or refuse.

    ``role``: the least role needed for any method. ``write_role``: the least role needed
    for a non-safe method (POST, ...); ``None`` means ``role`` suffices. ``methods``: the
    HTTP methods the view accepts.

    One query: all the caller's memberships with their teams and Kling accounts (see
    ``team_and_memberships_for_user``); for a GET/HEAD the page's team switcher reuses them
    (``request_memberships``), so it costs no query of its own.

    Raises ``LoginRequired`` (anonymous), ``MethodNotAllowed`` (405), ``Http404`` (no such
    team, or the caller is not in it), ``PermissionDenied`` (403: role too weak).
    """
    access, _ = team_and_memberships_for_user(
        request,
        code,
        related=("team__kling_account",),
        role=role,
        methods=methods,
        write_role=write_role,
    )
    return access


def _team_access(
    request: HttpRequest, membership: Membership | None, *, role: str, write_role: str | None
) -> TeamAccess:
    """The checks of ``team_for_user`` once the caller's membership (or None) is read."""
    if membership is None:
        raise Http404("No such team.")
    needed = role
    if write_role is not None and request.method not in READ:
        needed = max(role, write_role, key=lambda r: ROLE_RANK[r])
    if not membership.has_role(needed):
        raise PermissionDenied("Your role in this team does not allow this.")
    return TeamAccess(team=membership.team, membership=membership)


def team_and_memberships_for_user(
    request: HttpRequest,
    code: Any,
    *,
    related: Iterable[str] = (),
    role: str = Role.VIEWER,
    methods: Iterable[str] = READ,
    write_role: str | None = Role.MEMBER,
) -> tuple[TeamAccess, list[Membership]]:
    """``team_for_user`` (same checks, same errors) that reads ALL the caller's memberships
    in its one query, ordered by team name, with their teams (and ``related``: more
    ``select_related`` paths, e.g. ``"team__ledger_state"``; unlike ``team_for_user`` the
    team's Kling account is not loaded unless named there). Returns the access and that
    list, which a page passes to its template as ``my_memberships`` (the team switcher), so
    the switcher costs no query of its own; for a GET/HEAD the list is also kept for
    ``request_memberships`` (a read changes no membership; a write may, and its page reads
    them again)."""
    require_login(request)
    require_methods(request, methods)
    try:
        wanted = code if isinstance(code, uuid.UUID) else uuid.UUID(str(code))
    except ValueError:
        raise Http404("No such team.") from None
    memberships = list(
        Membership.objects.select_related("team", *related)
        .filter(user=request.user)
        .order_by("team__name", "pk")
    )
    membership = next((m for m in memberships if m.team.code == wanted), None)
    access = _team_access(request, membership, role=role, write_role=write_role)
    for item in memberships:
        # The membership's user is the caller: reuse it instead of a query when a page asks.
        Membership.user.field.set_cached_value(item, request.user)
    if request.method in READ:
        setattr(request, _MEMBERSHIPS_ATTR, memberships)
    return access, memberships


def object_for_user(
    request: HttpRequest,
    queryset: QuerySet[M],
    team_code: Any,
    code: Any,
    *,
    role: str = Role.VIEWER,
    methods: Iterable[str] = READ,
    write_role: str | None = Role.MEMBER,
) -> tuple[M, TeamAccess]:
    """Return the object with public ``code`` that belongs to team ``team_code``, or refuse.

    ``queryset`` is of a model with a ``team`` foreign key and a ``code`` UUID. The checks
    and errors are those of ``team_for_user``; an object of another team is ``Http404``.
    """
    access = team_for_user(request, team_code, role=role, methods=methods, write_role=write_role)
    obj = queryset.filter(team=access.team, code=code).first()
    if obj is None:
        raise Http404("Not found.")
    return obj, access


def request_memberships(request: HttpRequest) -> list[Membership] | None:
    """The caller's memberships (with teams, by team name) that ``team_for_user`` read for
    this GET/HEAD request, or None when it did not run (or the request writes). Lets the
    page's team switcher (``context_processors.portal``) skip a second query."""
    return getattr(request, _MEMBERSHIPS_ATTR, None)


def user_teams(request: HttpRequest) -> QuerySet[Membership]:
    """The signed-in user's memberships with their teams, by team name (for the switcher)."""
    require_login(request)
    return Membership.objects.select_related("team").filter(user=request.user)
