"""Views of the usage reports (issue 7): team usage, my usage, company usage, CSV exports.

Every view starts with an access helper: a team report with ``team_for_user`` (any member,
viewers included, reads it; an outsider gets 404), my usage with ``require_login``, the company
report with ``require_login`` and ``is_staff`` (anyone else gets 404: the page reveals
nothing). GET/HEAD only (anything else: 405).

The period and filters are GET parameters (``period``, ``start``, ``end``, ``family``,
``member``/``team``), so a report's URL can be shared. A request sent by HTMX (the picker
changed) gets only the report region, ``<page>.html#report``; the picker pushes the URL.
CSV exports stream (``klingweb.reporting.exports``): header row, ISO 8601 timestamps with the
report zone's offset, units as plain decimal strings.
"""

from __future__ import annotations

import pickle
from typing import Any

from django.conf import settings
from django.contrib.messages import get_messages
from django.core.cache import caches
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.functional import SimpleLazyObject
from django.utils.safestring import mark_safe
from django.utils.text import slugify

from klingweb.accounts.access import (
    READ,
    require_login,
    require_methods,
    team_and_memberships_for_user,
    team_for_user,
)
from klingweb.accounts.models import Membership
from klingweb.reporting.exports import (
    COMPANY_TABLES,
    REPORT_TABLES,
    company_csv_rows,
    csv_response,
    report_csv_rows,
)
from klingweb.reporting.figures import (
    TOP_TASKS,
    Scope,
    budgets_progress,
    company_report,
    key_digest,
    team_figures_source,
    usage_report,
)
from klingweb.reporting.periods import (
    COMPANY_PERIODS,
    MAX_COMPANY_RANGE_DAYS,
    TEAM_PERIODS,
    Choice,
    UsageForm,
    portal_zone,
    usage_choice,
)
from tasks_app.budgets import team_zone
from tasks_app.models import Budget
from tasks_app.prices import unit_price
from tasks_app.resource_packs import resource_packs_latest

#: Tables each page exports, with the link text.
TEAM_EXPORTS = {
    "ledger": "Ledger rows",
    "days": "Units per day",
    "families": "By kind of task",
    "members": "By member",
    "models": "By model and mode",
    "tasks": "By task",
}
MINE_EXPORTS = {**{k: v for k, v in TEAM_EXPORTS.items() if k != "members"}, "teams": "By team"}
COMPANY_EXPORTS = {"months": "Units per team per month", "ledger": "Ledger rows"}


def _is_partial(request: HttpRequest) -> bool:
    """True for an HTMX request that wants the report region (not a history restore)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.history_restore_request


#: The template holding a page's ``report`` partial, when not the page's own.
REGIONS = {"reporting/usage.html": "reporting/_usage_body.html"}


def _render(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    """The page, or its report region for HTMX; the region's response pushes the canonical
    URL of the choice (``?period=…``) so the address bar can be shared as it is."""
    if not _is_partial(request):
        response = render(request, template, context)
    else:
        response = render(request, f"{REGIONS.get(template, template)}#report", context)
        response["HX-Push-Url"] = f"{request.path}?{context['choice'].query}"
    patch_vary_headers(response, ("HX-Request",))
    return response


def _export_links(name: str, kwargs: dict[str, Any], tables: dict[str, str], choice: Choice):
    return [
        (label, f"{reverse(name, kwargs={**kwargs, 'table': table})}?{choice.query}")
        for table, label in tables.items()
    ]


def _filename(prefix: str, table: str, choice: Choice) -> str:
    period = choice.period
    return f"{prefix}-{table}-{period.first_day:%Y%m%d}-{period.last_day:%Y%m%d}.csv"


# --- Team ---------------------------------------------------------------------------------


def _team_request(request: HttpRequest, team: Any, access: Any = None):
    access = access or team_for_user(request, team)
    members = (
        Membership.objects.filter(team=access.team)
        .order_by("user__username")
        .values_list("user__username", flat=True)
    )
    form = UsageForm(
        request.GET,
        periods=TEAM_PERIODS,
        default="this_month",
        members=lambda: list(members),  # queried only if a member filter or the picker needs it
        offer=("family", "member"),
    )
    choice = usage_choice(form, tz=team_zone(access.team))
    scope = Scope(team_id=access.team.pk, member_username=choice.member, family=choice.family)
    return access, form, choice, scope


def _region_key(access: Any, choice: Choice, versions: tuple[int, int, int]) -> str:
    """The report cache key of a team page's rendered report region: the team, its ledger,
    tasks and settings versions (``_versions``: the first two bumped in the transaction of
    every ledger row, new task and status move, the third with every change of its members,
    budgets, name or zone or a member's username), the period (days and zone), the
    filters, the unit price and the reader's role. The region shows nothing else that can
    change (its member names are covered by the settings version; no CSRF token)."""
    period = choice.period
    parts = (
        access.team.pk,
        versions,
        period.key,
        period.first_day,
        period.last_day,
        period.tz_name,
        choice.family,
        choice.member,
        str(access.team.code),
        access.membership.role,
        unit_price(),
        TOP_TASKS,
        REGION_FORMAT,
    )
    return f"usage-region:{access.team.pk}:{versions[0]}:{versions[1]}:{key_digest(parts)}"


def _versions(team: Any) -> tuple[int, int, int]:
    """The team's (ledger version, tasks version, settings version): the first two from its
    ``ledger_state`` loaded with the access check (``LedgerState.version`` and
    ``tasks_version``; (0, 0) before the team's first task or charge made the row), the third
    ``Team.settings_version`` (``klingweb.accounts.services.team_settings_touch``)."""
    try:
        state = team.ledger_state
    except ObjectDoesNotExist:
        return (0, 0, team.settings_version)
    return (state.version, state.tasks_version, team.settings_version)


def _body_key(region_key: str, access: Any, today: Any) -> str:
    """The report cache key of a team page's rendered body (heading, picker, budgets,
    region): the region's key (which holds the three versions, the settings one covering
    the members, budgets, name and zone), the team's name and zone, and today's date in its
    zone (the budgets' windows, ``tasks_app.budgets.period_bounds``, follow it)."""
    team = access.team
    parts = (region_key, team.name, team.time_zone, today, BODY_FORMAT)
    return f"usage-body:{team.pk}:" + key_digest(parts)


#: Part of the body cache key: change it when ``_usage_body.html`` or its context change.
BODY_FORMAT = 1


#: Part of the region cache key: change it when the region's template or its context change.
REGION_FORMAT = 1


def usage_team(request: HttpRequest, team: Any) -> HttpResponse:
    """GET /t/<team>/usage/ (``usage-team``): the team's usage for a period.

    Any member (viewers too) reads it; outsider → 404; anonymous → login; not GET → 405.
    Query: ``period`` (``TEAM_PERIODS``; default this month), ``start``/``end`` (ISO dates,
    custom), ``family``, ``member`` (username). Days run in the team's time zone. An HTMX
    request gets ``reporting/_usage_body.html#report``. A fixed number of queries.

    Behind the access check, the report cache (``settings.REPORT_CACHE``) keeps the
    rendered report region (HTML, with the pickled ``UsageReport`` it was drawn from) under
    ``_region_key`` and the whole rendered body (heading, picker, budgets, region) under
    ``_body_key``: a page load after a charge, a new task or a status move (new ledger or
    tasks version), a change of the team's members, budgets, name or zone (new settings
    version) or a new local day renders afresh; so does a form error. A body served from
    the cache costs three queries (session, user, memberships with the team's versions).
    The budgets' sums are cached by the ledger version (``budgets_progress``).
    """
    # One query: the access check, the switcher's memberships and the team's versions.
    access, memberships = team_and_memberships_for_user(
        request, team, related=("team__ledger_state",)
    )
    access, form, choice, scope = _team_request(request, team, access)
    partial = _is_partial(request)
    versions = _versions(access.team)
    cache = caches[settings.REPORT_CACHE]
    key = _region_key(access, choice, versions) if form.is_valid() else ""
    body_key = ""
    if key and not partial:
        today = timezone.now().astimezone(team_zone(access.team)).date()
        body_key = _body_key(key, access, today)
    context: dict[str, Any] = {
        "page": "team",
        "team": access.team,
        "access": access,
        "my_memberships": memberships,
        "form": form,
        "choice": choice,
        # Drawn only by the body (not on a cached body).
        "exports": lambda: _export_links(
            "usage-team-export", {"team": access.team.code}, TEAM_EXPORTS, choice
        ),
    }
    page_key = _page_key(request, body_key, memberships) if body_key else ""
    page = cache.get(page_key) if page_key else None
    if page is not None:  # the whole page as this user saw it: only the CSRF token is new
        html, blob = page
        context["report"] = _unpickled(blob)
        return _page_response(request, context, html)
    body = cache.get(body_key) if body_key else None
    if body is not None:  # the whole body: no query for members, budgets or figures
        context["body_html"], blob = body
        context["report"] = _unpickled(blob)
        return _page_store(request, context, page_key, blob)
    hit = cache.get(key) if key else None
    if hit is not None:
        html, blob = hit
        context["report"] = _unpickled(blob)
        context["report_html"] = html
    else:
        context["report"] = usage_report(
            scope=scope,
            choice=choice,
            group_kind="member",
            source=team_figures_source(choice.period),
        )
        html = render_to_string("reporting/_usage_body.html#report", context, request)
        context["report_html"] = html
        blob = pickle.dumps(context["report"], pickle.HIGHEST_PROTOCOL)
        if key:
            cache.set(key, (html, blob), settings.REPORT_CACHE_SECONDS)
    if not partial:
        budgets = Budget.objects.filter(team=access.team).select_related("team", "member")
        context["budgets"] = budgets_progress(
            budgets=list(budgets.order_by("member__username", "period")),
            ledger_version=versions[0],
        )
        if body_key:
            body_html = render_to_string("reporting/_usage_body.html", context, request)
            cache.set(body_key, (body_html, blob), settings.REPORT_CACHE_SECONDS)
            context["body_html"] = body_html
            return _page_store(request, context, page_key, blob)
    return _render(request, "reporting/usage.html", context)


#: Stands for the CSRF token in a cached page (``_page_store``); replaced on every load.
CSRF_SENTINEL = "klingweb-csrf-token-placeholder"
#: Part of the page cache key: change it when ``base.html`` or its context change.
PAGE_FORMAT = 1
#: The static files a usage page links (their hashed names key a cached page: a deploy that
#: changes one renders afresh).
PAGE_STATIC = ("css/app.css", "js/app.js", "js/usage.js", "vendor/chartjs/chart.umd.min.js")


def _page_key(request: HttpRequest, body_key: str, memberships: list) -> str:
    """The report cache key of a whole team usage page as one user sees it: the body's key
    (``_body_key``), then what ``base.html`` shows of the user and the portal: user id,
    username and staff flag, the team switcher (the user's memberships as just read: team,
    code, name, role), the sandbox and sign-up settings and the static files' URLs. ""
    (no page cache) while messages wait to be shown."""
    if len(get_messages(request)):  # loads them without marking them shown
        return ""
    user = request.user
    parts = (
        body_key,
        user.pk,
        user.get_username(),
        user.is_staff,
        [(m.team_id, str(m.team.code), m.team.name, m.role) for m in memberships],
        settings.KLING_SANDBOX_MODE,
        settings.ALLOW_SIGNUP,
        [static(name) for name in PAGE_STATIC],
        PAGE_FORMAT,
    )
    return f"usage-page:{user.pk}:" + key_digest(parts)


def _page_store(request: HttpRequest, context: dict[str, Any], page_key: str, blob: bytes):
    """Render the whole team usage page (``usage.html``, its body in ``body_html``), keep it
    under ``page_key`` with ``CSRF_SENTINEL`` for the CSRF token, and answer it."""
    if not page_key:
        return _render(request, "reporting/usage.html", context)
    html = render_to_string(
        "reporting/usage.html", {**context, "csrf_token": CSRF_SENTINEL}, request
    )
    caches[settings.REPORT_CACHE].set(page_key, (html, blob), settings.REPORT_CACHE_SECONDS)
    return _page_response(request, context, html)


def _page_response(request: HttpRequest, context: dict[str, Any], html: str) -> HttpResponse:
    """Answer a page kept by ``_page_store``, with this request's CSRF token (``get_token``
    also sets the CSRF cookie as rendering ``{% csrf_token %}`` would). Rendered through
    ``reporting/_cached_page.html`` so the response carries its context, as any page's."""
    page = mark_safe(html.replace(CSRF_SENTINEL, get_token(request)))  # noqa: S308 - our HTML
    response = render(request, "reporting/_cached_page.html", {**context, "page_html": page})
    patch_vary_headers(response, ("HX-Request",))
    return response


def _unpickled(blob: bytes) -> Any:
    """The ``UsageReport`` a cached region or body was drawn from, unpickled only if read
    (tests read ``response.context["report"]``). The blob was pickled by ``usage_team`` into
    the report cache, whose backends unpickle every value anyway: no outside data."""
    return SimpleLazyObject(lambda: pickle.loads(blob))  # noqa: S301


def usage_team_export(request: HttpRequest, team: Any, table: str) -> HttpResponse:
    """GET /t/<team>/usage/export/<table>.csv (``usage-team-export``): one table of the team
    report (``TEAM_EXPORTS``: ledger, days, families, members, models, tasks) for the period
    and filters in the query, as a streamed CSV. Access as ``usage_team``; unknown table →
    404; invalid period → 400."""
    access, form, choice, scope = _team_request(request, team)
    if table not in TEAM_EXPORTS:
        raise Http404("No such table.")
    if not form.is_valid():
        return HttpResponseBadRequest("Invalid period or filter.")
    return csv_response(
        filename=_filename(f"usage-{slugify(access.team.name) or 'team'}", table, choice),
        header=REPORT_TABLES[table],
        rows=report_csv_rows(table=table, scope=scope, choice=choice),
    )


# --- Mine ---------------------------------------------------------------------------------


def _mine_request(request: HttpRequest):
    require_login(request)
    require_methods(request, READ)
    memberships = list(
        Membership.objects.filter(user=request.user).select_related("team").order_by("team__name")
    )
    form = UsageForm(
        request.GET,
        periods=TEAM_PERIODS,
        default="this_month",
        teams=[(str(m.team.code), m.team.name) for m in memberships],
        offer=("family", "team"),
    )
    choice = usage_choice(form, tz=portal_zone())
    team_ids = [
        m.team_id for m in memberships if not choice.team or str(m.team.code) == choice.team
    ]
    scope = Scope(team_ids=team_ids, member_id=request.user.pk, family=choice.family)
    return memberships, form, choice, scope, team_ids


def usage_mine(request: HttpRequest) -> HttpResponse:
    """GET /usage/me/ (``usage-mine``): the signed-in member's usage across their teams.

    Anonymous → login; not GET → 405. Query as ``usage_team`` with ``team`` (a team code)
    instead of ``member``. Days run in the portal's time zone (``settings.TIME_ZONE``). Shows
    the budgets that bind the member (their own and their teams'). HTMX → ``#report``.
    """
    memberships, form, choice, scope, team_ids = _mine_request(request)
    context: dict[str, Any] = {
        "page": "mine",
        "form": form,
        "choice": choice,
        "report": usage_report(scope=scope, choice=choice, group_kind="team"),
        "exports": _export_links("usage-mine-export", {}, MINE_EXPORTS, choice),
    }
    if not _is_partial(request):
        budgets = (
            Budget.objects.filter(team_id__in=[m.team_id for m in memberships])
            .filter(Q(member__isnull=True) | Q(member=request.user))
            .select_related("team", "member")
            .order_by("team__name", "member__username", "period")
        )
        rows = list(budgets)
        context["budgets"] = budgets_progress(budgets=rows)
    return _render(request, "reporting/usage.html", context)


def usage_mine_export(request: HttpRequest, table: str) -> HttpResponse:
    """GET /usage/me/export/<table>.csv (``usage-mine-export``): one table of my usage
    (``MINE_EXPORTS``) as a streamed CSV. Access as ``usage_mine``; unknown table → 404;
    invalid period → 400."""
    _, form, choice, scope, _ = _mine_request(request)
    if table not in MINE_EXPORTS:
        raise Http404("No such table.")
    if not form.is_valid():
        return HttpResponseBadRequest("Invalid period or filter.")
    return csv_response(
        filename=_filename(f"usage-{slugify(request.user.get_username()) or 'me'}", table, choice),
        header=REPORT_TABLES[table],
        rows=report_csv_rows(table=table, scope=scope, choice=choice),
    )


# --- Company ------------------------------------------------------------------------------


def _company_request(request: HttpRequest):
    require_login(request)
    require_methods(request, READ)
    if not request.user.is_staff:
        raise Http404("No such page.")
    form = UsageForm(
        request.GET,
        periods=COMPANY_PERIODS,
        default="12m",
        offer=(),
        max_days=MAX_COMPANY_RANGE_DAYS,
    )
    return form, usage_choice(form, tz=portal_zone())


def usage_company(request: HttpRequest) -> HttpResponse:
    """GET /usage/company/ (``usage-company``): units per team per month across all teams,
    and the Kling accounts' resource packs from the latest snapshots.

    Staff only (``is_staff``); anyone else signed in → 404; anonymous → login; not GET → 405.
    Query: ``period`` (``COMPANY_PERIODS``; default the last 12 months), ``start``/``end``.
    Months run in the portal's time zone. HTMX → ``usage_company.html#report``.
    """
    form, choice = _company_request(request)
    context: dict[str, Any] = {
        "page": "company",
        "form": form,
        "choice": choice,
        "report": company_report(choice=choice),
        "exports": _export_links("usage-company-export", {}, COMPANY_EXPORTS, choice),
    }
    if not _is_partial(request):
        context["accounts"] = resource_packs_latest()
    return _render(request, "reporting/usage_company.html", context)


def usage_company_export(request: HttpRequest, table: str) -> HttpResponse:
    """GET /usage/company/export/<table>.csv (``usage-company-export``): ``months`` (team,
    YYYY-MM, units) or ``ledger`` (every team's rows) as a streamed CSV. Access as
    ``usage_company``; unknown table → 404; invalid period → 400."""
    form, choice = _company_request(request)
    if table not in COMPANY_TABLES:
        raise Http404("No such table.")
    if not form.is_valid():
        return HttpResponseBadRequest("Invalid period.")
    return csv_response(
        filename=_filename("usage-company", table, choice),
        header=COMPANY_TABLES[table],
        rows=company_csv_rows(table=table, choice=choice),
    )
