"""Staff-only operations pages: reconciliation issues (``/ops/reconciliation/``) and stale
tasks (``/ops/stale/``). Not the Django admin (that is ``/admin/``).

Access: ``_staff`` first (anonymous → login, wrong method → 405); anyone who is not staff or
superuser gets 404 (they do not learn the page exists). HTMX: a POST that resolves an issue
answers the ``issues`` partial with a notice; without HTMX it redirects with a message.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from klingweb.accounts.access import READ, WRITE, require_login, require_methods
from tasks_app.models import IN_FLIGHT, ReconciliationIssue, Task
from tasks_app.reconcile import IssueResolved, deduction_correct, issue_dismiss


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
