"""Template context shared by every page: the team switcher and the portal-wide banners."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from klingweb.accounts.access import request_memberships
from klingweb.accounts.models import Membership


def portal(request: HttpRequest) -> dict:
    """Add ``my_memberships`` (team switcher), ``sandbox_mode`` (banner), ``allow_signup``.

    ``my_memberships`` is the list the view's ``team_for_user`` already read (GET/HEAD),
    else a lazy queryset, evaluated only by templates that use it.
    """
    user = getattr(request, "user", None)
    memberships = request_memberships(request)  # read by the view's access check: no query
    if memberships is None:
        memberships = (
            Membership.objects.select_related("team").filter(user=user).order_by("team__name")
            if user is not None and user.is_authenticated
            else Membership.objects.none()
        )
    return {
        "my_memberships": memberships,
        "sandbox_mode": settings.KLING_SANDBOX_MODE,
        "allow_signup": settings.ALLOW_SIGNUP,
    }
