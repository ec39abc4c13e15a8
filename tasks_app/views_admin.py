"""Views of the background-cluster features: team budgets and the staff-only operations
pages (reconciliation issues, stale tasks). Kept result files are served by the tasks
stream's ``tasks-media-file`` view.

Access (DESIGN.md §3): team pages start with ``team_for_user``/``object_for_user``
(anonymous → login, outsider → 404, viewer writing → 403, wrong method → 405). Budgets are
read by every member and written by admins and owners. The ``/ops/`` pages are for staff
users only; everybody else gets 404 (they do not learn the page exists).

HTMX: a POST from the budgets page answers the ``budgets`` partial with a notice; without
HTMX it redirects back with a message.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from klingweb.accounts.access import (
    READ,
    READ_WRITE,
    WRITE,
    object_for_user,
    require_login,
    require_methods,
    team_for_user,
)
from klingweb.accounts.models import Role
from tasks_app.budgets import (
    budget_banners,
    budget_label,
    budget_statuses,
    team_budgets,
    units_text,
)
from tasks_app.models import (
    IN_FLIGHT,
    Budget,
    BudgetPeriod,
    ReconciliationIssue,
    Task,
)
from tasks_app.reconcile import IssueResolved, deduction_correct, issue_dismiss


class BudgetForm(forms.Form):
    """A budget: ``period``, ``units`` (Kling credit units ≥ 0) and, for a per-member cap,
    ``member`` (a member of the team; empty = the whole team). Saving the same scope and
    period again replaces its units."""

    period = forms.ChoiceField(choices=BudgetPeriod.choices)
    units = forms.DecimalField(min_value=Decimal("0"), max_digits=12, decimal_places=3)
    member = forms.ModelChoiceField(
        queryset=get_user_model().objects.none(),
        required=False,
        empty_label="Whole team",
        help_text="Leave empty for the team's budget; pick someone for a per-member cap.",
    )

    def __init__(self, *args: Any, team, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["member"].queryset = (
            get_user_model().objects.filter(memberships__team=team).order_by("username")
        )
        self.fields["member"].label_from_instance = lambda user: user.get_username()


def _budgets_context(request: HttpRequest, access, **extra: Any) -> dict:
    statuses = budget_statuses(budgets=team_budgets(team=access.team))
    context = {
        "access": access,
        "team": access.team,
        "statuses": statuses,
        "form": BudgetForm(team=access.team),
        "budget_banners": budget_banners(team=access.team, user=request.user),
    }
    context.update(extra)
    return context


def _budgets_answer(request: HttpRequest, access, *, ok: bool, text: str, **extra: Any):
    if request.htmx:
        context = _budgets_context(request, access, notice={"ok": ok, "text": text}, **extra)
        return render(request, "tasks_app/budgets.html#budgets", context, status=200)
    (messages.success if ok else messages.error)(request, text)
    return redirect("tasks-budgets", team=access.team.code)


def budgets(request: HttpRequest, team: Any) -> HttpResponse:
    """GET /t/<team>/budgets/: the team's budgets with spending this period and the reset
    moment (every member). POST: create or replace a budget (admins and owners; fields of
    ``BudgetForm``). HTMX GET/POST → the ``budgets`` partial."""
    access = team_for_user(request, team, methods=READ_WRITE, write_role=Role.ADMIN)
    if request.method == "POST":
        form = BudgetForm(request.POST, team=access.team)
        if not form.is_valid():
            if request.htmx:
                context = _budgets_context(request, access, form=form)
                return render(request, "tasks_app/budgets.html#budgets", context, status=422)
            return render(
                request,
                "tasks_app/budgets.html",
                _budgets_context(request, access, form=form),
                status=422,
            )
        data = form.cleaned_data
        try:
            with transaction.atomic():
                budget, created = Budget.objects.update_or_create(
                    team=access.team,
                    member=data["member"],
                    period=data["period"],
                    defaults={"units": data["units"]},
                    create_defaults={"units": data["units"], "created_by": request.user},
                )
        except IntegrityError:  # the same budget saved twice at once
            return _budgets_answer(request, access, ok=False, text="Try again.")
        verb = "set" if created else "changed"
        return _budgets_answer(
            request,
            access,
            ok=True,
            text=f"{budget_label(budget)} {verb} to {units_text(budget.units)} units.",
        )
    template = "tasks_app/budgets.html#budgets" if request.htmx else "tasks_app/budgets.html"
    return render(request, template, _budgets_context(request, access))


def budget_delete(request: HttpRequest, team: Any, code: Any) -> HttpResponse:
    """POST /t/<team>/budgets/<code>/delete/: remove a budget (admins and owners)."""
    budget, access = object_for_user(
        request,
        Budget.objects.select_related("member", "team"),
        team,
        code,
        role=Role.ADMIN,
        methods=WRITE,
    )
    label = budget_label(budget)
    budget.delete()
    return _budgets_answer(request, access, ok=True, text=f"{label} removed.")


# --- staff-only operations pages --------------------------------------------------------


def _staff(request: HttpRequest, methods=READ) -> None:
    """Access helper of the /ops/ pages: login, method, then staff (else 404)."""
    require_login(request)
    require_methods(request, methods)
    if not (request.user.is_staff or request.user.is_superuser):
        raise Http404("Not found.")


def reconciliation(request: HttpRequest) -> HttpResponse:
    """GET /ops/reconciliation/ (staff): open issues found by the nightly reconciliation,
    with their ledger and vendor units, and the last 50 resolved. HTMX → ``issues`` partial."""
    _staff(request)
    return _issues_page(request)


def _issues_page(request: HttpRequest, notice: dict | None = None) -> HttpResponse:
    open_issues = ReconciliationIssue.objects.filter(resolved_at__isnull=True).select_related(
        "task", "team"
    )
    resolved = (
        ReconciliationIssue.objects.filter(resolved_at__isnull=False)
        .select_related("task", "team", "resolved_by", "correction")
        .order_by("-resolved_at")[:50]
    )
    context = {"open_issues": open_issues, "resolved": resolved, "notice": notice}
    template = "tasks_app/reconcile.html#issues" if request.htmx else "tasks_app/reconcile.html"
    return render(request, template, context)


def reconciliation_resolve(request: HttpRequest, code: Any) -> HttpResponse:
    """POST /ops/reconciliation/<code>/ (staff) with ``action`` = ``correct`` (append a
    correction row to the ledger) or ``dismiss``; redirects (HTMX: the ``issues`` partial)."""
    _staff(request, methods=WRITE)
    issue = ReconciliationIssue.objects.filter(code=code).first()
    if issue is None:
        raise Http404("Not found.")
    action = request.POST.get("action")
    try:
        if action == "correct":
            row = deduction_correct(
                issue=issue, user=request.user, note=request.POST.get("note", "")
            )
            text = (
                f"Correction of {row.units} units appended to the ledger."
                if row
                else "The ledger already matched; issue closed."
            )
        elif action == "dismiss":
            issue_dismiss(issue=issue, user=request.user)
            text = "Issue dismissed; the ledger is unchanged."
        else:
            messages.error(request, "Unknown action.")
            return redirect("tasks-reconciliation")
    except IssueResolved as exc:
        text = str(exc)
    if request.htmx:
        return _issues_page(request, notice={"ok": True, "text": text})
    messages.success(request, text)
    return redirect("tasks-reconciliation")


def stale_tasks(request: HttpRequest) -> HttpResponse:
    """GET /ops/stale/ (staff): tasks in flight flagged stale (not finished after
    ``POLL_STALE_AFTER_SECONDS``; still polled every ~5 min), oldest first."""
    _staff(request)
    tasks = (
        Task.objects.filter(is_stale=True, status__in=list(IN_FLIGHT))
        .select_related("team", "creator")
        .order_by("created_at")[:500]
    )
    return render(request, "tasks_app/reconcile_stale.html", {"tasks": tasks})
