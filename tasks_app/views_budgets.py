"""Views of a team's budgets: the budgets page (``/t/<team>/budgets/``) and removing one.

Access (DESIGN.md §3): each view starts with ``team_for_user``/``object_for_user``
(anonymous → login, outsider → 404, viewer writing → 403, wrong method → 405). Budgets are
read by every member and written by admins and owners. A budget counts Kling credit units
or money in ``settings.KLING_CURRENCY`` (``Budget.measure``).

HTMX: a POST from the budgets page answers the ``budgets`` partial with a notice; without
HTMX it redirects back with a message.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from klingweb.accounts.access import READ_WRITE, WRITE, object_for_user, team_for_user
from klingweb.accounts.models import Role
from tasks_app.budgets import (
    budget_banners,
    budget_label,
    budget_remove,
    budget_set,
    budget_statuses,
    measure_text,
    reserved_tasks,
    team_budgets,
)
from tasks_app.models import Budget, BudgetMeasure, BudgetPeriod
from tasks_app.prices import currency


class BudgetForm(forms.Form):
    """A budget: ``period``, ``measure`` (``units`` or ``money``), ``units`` (the limit ≥ 0:
    Kling credit units, or money in ``settings.KLING_CURRENCY``) and, for a per-member cap,
    ``member`` (a member of the team; empty = the whole team). Saving the same scope and
    period again replaces its limit and measure."""

    period = forms.ChoiceField(choices=BudgetPeriod.choices)
    measure = forms.ChoiceField(
        choices=BudgetMeasure.choices,
        initial=BudgetMeasure.UNITS,
        label="Counted in",
        required=False,
        help_text="Units of Kling credit, or money (empty: units).",
    )
    units = forms.DecimalField(
        min_value=Decimal("0"), max_digits=12, decimal_places=3, label="Limit"
    )
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
        self.fields["measure"].choices = [
            (BudgetMeasure.UNITS, "Units"),
            (BudgetMeasure.MONEY, f"Money ({currency()})"),
        ]

    def clean_measure(self) -> str:
        """An empty measure means units (forms posted before budgets had one)."""
        return self.cleaned_data.get("measure") or BudgetMeasure.UNITS


#: How many holding tasks the budgets page lists (newest first).
HOLDING_LIMIT = 50


def _budgets_context(request: HttpRequest, access, **extra: Any) -> dict:
    statuses = budget_statuses(budgets=team_budgets(team=access.team))
    holding = list(
        reserved_tasks(budget=Budget(team=access.team)).select_related("creator")[:HOLDING_LIMIT]
    )
    context = {
        "holding": holding,
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
            budget, created = budget_set(
                team=access.team,
                member=data["member"],
                period=data["period"],
                units=data["units"],
                measure=data["measure"],
                by=request.user,
            )
        except IntegrityError:  # the same budget saved twice at once
            return _budgets_answer(request, access, ok=False, text="Try again.")
        verb = "set" if created else "changed"
        return _budgets_answer(
            request,
            access,
            ok=True,
            text=f"{budget_label(budget)} {verb} to {measure_text(budget.units, budget.measure)}.",
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
    budget_remove(budget=budget)
    return _budgets_answer(request, access, ok=True, text=f"{label} removed.")
