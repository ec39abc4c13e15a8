"""What a task list shows once its rows and filter form are computed in Python
(``tasks_app/rows.py``, ``tasks_app.forms.PlainSelect``): the same row text, the cancel
button for the right people, the "Created by" choices, and a search that counts to 50 (in the list order)."""

from __future__ import annotations

import re

from django.urls import reverse

from tasks_app.models import Status, Task
from tests.test_tasks_list_scale import list_url, pager, seed

LONG_PROMPT = "A slow pan over a misty harbour at dawn, fishing boats rocking, gulls circling " * 2


def row_html(body: str, task: Task) -> str:
    """The ``<tr>`` of ``task`` in a list page."""
    match = re.search(rf'<tr id="task-{task.code}".*?</tr>', body, re.S)
    assert match, f"no row for {task.code}"
    return match.group(0)


def test_a_row_shows_the_task_as_before(client, portal):
    """Truncated prompt with the file summary under it, the waiting note with its full text
    as a title, status, creator, units, creation time and the task page link."""
    task = Task.objects.create(
        team=portal.team,
        creator=portal.member,
        family="text2video",
        model_name="kling-v2-6",
        mode="pro",
        prompt=LONG_PROMPT,
        summary="input.png (1.2 MB)",
        status=Status.QUEUED,
        error_message="Kling is busy with other tasks of this account (1303); retrying soon",
    )
    client.force_login(portal.viewer)
    row = row_html(client.get(list_url(portal)).content.decode(), task)
    detail = reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
    assert f'<a href="{detail}">{LONG_PROMPT[:89]}…</a>' in row
    assert '<small class="muted">input.png (1.2 MB)</small>' in row
    assert 'Text to video<br><small class="muted">kling-v2-6 · pro</small>' in row
    assert 'title="Kling is busy with other tasks of this account (1303); retrying soon"' in row
    assert ">waiting: Kling is busy with other tasks of this …</small>" in row
    assert '<span class="badge badge-queued" title="Queued">Queued</span>' in row
    assert f"<td>{portal.member.get_username()}</td>" in row
    assert '<td class="num">—</td>' in row
    assert task.created_at.strftime("%Y-%m-%d %H:%M") in row
    assert "data-elapsed=" in row
    assert "task-cancel" not in row  # a viewer cannot cancel


def test_cancel_button_for_the_creator_and_admins_only(client, portal):
    mine = Task.objects.create(
        team=portal.team, creator=portal.member, family="text2video", prompt="mine"
    )
    theirs = Task.objects.create(
        team=portal.team, creator=portal.owner, family="text2video", prompt="theirs"
    )
    cancel = reverse("tasks-cancel", kwargs={"team": portal.team.code, "code": mine.code})
    client.force_login(portal.member)
    body = client.get(list_url(portal)).content.decode()
    assert f'action="{cancel}" hx-post="{cancel}" hx-target="#task-{mine.code}"' in row_html(
        body, mine
    )
    assert "task-cancel" not in row_html(body, theirs)
    client.force_login(portal.admin)
    body = client.get(list_url(portal)).content.decode()
    assert "task-cancel" in row_html(body, mine) and "task-cancel" in row_html(body, theirs)


def test_created_by_lists_the_members_and_keeps_the_choice(client, portal):
    Task.objects.create(team=portal.team, creator=portal.member, family="text2video")
    client.force_login(portal.owner)
    body = client.get(list_url(portal), {"creator": str(portal.member.pk)}).content.decode()
    select = re.search(r'<select name="creator".*?</select>', body, re.S).group(0)
    assert '<option value="">Anyone</option>' in select
    assert (
        f'<option value="{portal.member.pk}" selected>{portal.member.get_username()}</option>'
        in (select)
    )
    names = re.findall(r'<option value="\d+"[^>]*>([^<]+)</option>', select)
    assert names == sorted(
        u.get_username() for u in (portal.owner, portal.admin, portal.member, portal.viewer)
    )
    assert portal.outsider.get_username() not in select


def test_a_search_counts_up_to_50_matches(client, portal):
    """Past 50 matches the pager says "50+" and "Older →" stays available."""
    seed(portal, 90)
    client.force_login(portal.member)
    body = client.get(list_url(portal), {"q": "row"}).content.decode()
    assert pager(body) == "Page 1 of 2+ · 50+ tasks"
    assert "Older →" in body
    last = client.get(list_url(portal), {"q": "row", "page": 3}).content.decode()
    assert pager(last) == "Page 3 of 3+ · 75+ tasks"
    end = client.get(list_url(portal), {"q": "row", "page": 4}).content.decode()
    assert pager(end) == "Page 4 of 4 · 90 tasks" and "Older →" not in end


def test_plain_select_writes_what_djangos_select_writes():
    """``PlainSelect`` (escaping each option in Python) gives Django's ``Select`` markup byte
    for byte: escaped values and labels, lazy labels, safe labels kept as they are, the
    selected option, no value."""
    from django import forms
    from django.utils.functional import lazy
    from django.utils.safestring import mark_safe

    from tasks_app.forms import PlainSelect

    lazy_text = lazy(lambda: "Any <status>", str)
    choices = [
        ("", lazy_text()),
        ("a&b", 'Tom "the" <b>'),
        (7, "Seven's"),
        ("safe", mark_safe("<em>kept</em>")),  # noqa: S308 -- a constant
        ("é", "Ünïcode & co"),
    ]
    for value in (None, "", "a&b", 7, "safe", "é", "missing"):
        attrs = {"id": "id_x", "data-x": 'q"<'}
        ours = PlainSelect(choices=choices).render("x", value, attrs=attrs)
        django = forms.Select(choices=choices).render("x", value, attrs=attrs)
        assert str(ours) == str(django), value
