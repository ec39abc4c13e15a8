"""The ``element`` task family (filled in by the elements issue)."""

from __future__ import annotations

from tasks_app.families import TaskFamily

ELEMENT = TaskFamily(
    key="element",
    label="Custom element",
    client_family="element",
    form_class="elements_app.forms.ElementForm",
    template="elements_app/element_form.html",
    result_kind="elements",
)
