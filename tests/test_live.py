"""One live request per page (issue 14 item 4): the task lists and the element library ask
one URL per interval for the whole page (``tasks_app.live``, ``elements_app.live``), which
answers with the rows that changed and the new rows as out-of-band swaps, respects the page's
filters and page, stops when nothing on the page can change, and costs the same number of
queries for 25 or 100 unfinished rows.

Each test opens a list page as the browser does, reads the URL of its poller, changes the
database the way the portal does (``task_status_move``, a teammate's new task), then makes
the one request the page would make and checks what the page would swap in.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from elements_app.models import Element, ElementStatus
from klingweb.accounts.models import KlingAccount
from tasks_app.models import Status, Task
from tasks_app.services import task_status_move

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
_POLLER = re.compile(r'<div id="(?:task|element)-live"[^>]*hx-get="([^"]+)"([^>]*)>')


def make_task(team, creator=None, **kw) -> Task:
    """A task row as the services would have left it, created ``minutes`` ago."""
    minutes = kw.pop("minutes", 0)
    defaults = {"family": "text2video", "prompt": "a red fox in snow", "status": Status.QUEUED}
    defaults.update(kw)
    task = Task.objects.create(team=team, creator=creator, **defaults)
    if minutes:
        Task.objects.filter(pk=task.pk).update(
            created_at=timezone.now() - timedelta(minutes=minutes)
        )
    return task


def finish(task: Task) -> None:
    """Kling finished ``task``: the one writer of status moves it (as ``task_apply_remote``)."""
    task_status_move(task=task, to=Status.SUCCEED, source="poll", finished_at=timezone.now())


def poller(body: str) -> tuple[str, bool]:
    """The live URL a page or a live answer asks next, and whether it still polls."""
    match = _POLLER.search(body)
    assert match, body[:3000]
    return match.group(1).replace("&amp;", "&"), "hx-trigger=" in match.group(2)


def swaps(body: str) -> list[tuple[str, str]]:
    """The out-of-band swaps of a live answer: ``(element id, hx-swap-oob)``; an inserted
    row is reported as ``(its id, "insert:<where>")``."""
    out = []
    for tag in re.finditer(r"<tbody hx-swap-oob=\"([^\"]+)\">\s*<tr id=\"([^\"]+)\"", body):
        out.append((tag.group(2), "insert:" + tag.group(1)))
    for tag in re.finditer(
        r"<div hx-swap-oob=\"([^\"]+)\">\s*(?:\{#.*?#\}\s*)?<article[^>]*id=\"([^\"]+)\"", body
    ):
        out.append((tag.group(2), "insert:" + tag.group(1)))
    for tag in re.finditer(
        r'<(?:tr|article|div)\b[^>]*?\bid="([^"]+)"[^>]*?hx-swap-oob="([^"]+)"', body
    ):
        out.append((tag.group(1), tag.group(2)))
    return sorted(out)


def open_page(client, team, name="tasks-list", **query) -> tuple[str, bool, str]:
    """Open a list page as a browser would: its live URL, whether it polls, its HTML."""
    response = client.get(reverse(name, kwargs={"team": team.code}), query)
    assert response.status_code == 200
    body = response.content.decode()
    url, active = poller(body)
    return url, active, body


def row(task: Task) -> str:
    return f"task-{task.code}"


# -- tasks: one request for the page -------------------------------------------------------


def test_list_page_has_one_poller_and_no_polling_rows(client, portal):
    for minutes in range(25):
        make_task(portal.team, portal.member, status=Status.PROCESSING, minutes=minutes)
    client.force_login(portal.viewer)
    _, active, body = open_page(client, portal.team)
    assert active
    assert body.count("hx-trigger=") == 1 + body.count('id="task-filters"')  # the filter form
    assert body.count('hx-trigger="every 3s"') == 1


def test_one_request_returns_changed_and_new_rows_only(client, portal):
    running = make_task(portal.team, portal.member, status=Status.PROCESSING, minutes=3)
    done = make_task(portal.team, portal.member, status=Status.SUCCEED, minutes=2)
    waiting = make_task(portal.team, portal.member, minutes=1)
    client.force_login(portal.member)
    live, active, _ = open_page(client, portal.team)
    assert active

    finish(running)
    teammates = make_task(portal.team, portal.owner, prompt="the owner's new task")
    answer = client.get(live, headers=HTMX)

    assert answer.status_code == 200
    body = answer.content.decode()
    assert swaps(body) == sorted(
        [
            (row(running), "true"),
            (row(teammates), f"insert:beforebegin:#{row(waiting)}"),
            ("task-pages", "true"),  # "3 tasks" became 4
        ]
    )
    assert "the owner&#x27;s new task" in body and "Succeed" in body
    assert str(done.code) not in body and str(waiting.code) not in body.replace(
        f"#{row(waiting)}", ""
    )
    # The next request, with nothing changed since, carries only the poller.
    again, still = poller(body)
    assert still
    quiet = client.get(again, headers=HTMX).content.decode()
    assert swaps(quiet) == [] and "<tr" not in quiet


def test_new_task_on_an_empty_list_rebuilds_the_table(client, portal):
    client.force_login(portal.member)
    live, active, body = open_page(client, portal.team)
    assert active and "has no tasks yet" in body
    task = make_task(portal.team, portal.owner, prompt="first of the team")
    answer = client.get(live, headers=HTMX)
    assert answer["HX-Retarget"] == "#task-table" and answer["HX-Reswap"] == "outerHTML"
    body = answer.content.decode()
    assert body.lstrip().startswith('<section id="task-table"') and row(task) in body
    assert poller(body)[1]


def test_malformed_seen_gets_the_whole_table(client, portal):
    make_task(portal.team, portal.member)
    client.force_login(portal.member)
    live, _, _ = open_page(client, portal.team)
    broken = re.sub(r"seen=[^&]+", "seen=not-a-token", live)
    answer = client.get(broken, headers=HTMX)
    assert answer.status_code == 200 and answer["HX-Retarget"] == "#task-table"


def test_filters_are_respected(client, portal):
    make_task(portal.team, portal.member, family="avatar", status=Status.PROCESSING, minutes=5)
    client.force_login(portal.member)
    live, active, _ = open_page(client, portal.team, family="avatar", q="fox")
    assert active and "family=avatar" in live and "q=fox" in live

    make_task(portal.team, portal.owner, family="text2video", prompt="a fox, other kind")
    make_task(portal.team, portal.owner, family="avatar", prompt="no match here")
    wanted = make_task(portal.team, portal.owner, family="avatar", prompt="an avatar fox")
    body = client.get(live, headers=HTMX).content.decode()
    inserted = [swap for swap in swaps(body) if swap[1].startswith("insert:")]
    assert [element_id for element_id, _ in inserted] == [row(wanted)]
    assert "other kind" not in body and "no match here" not in body


def test_row_leaving_the_filter_is_deleted(client, portal):
    task = make_task(portal.team, portal.member, status=Status.PROCESSING)
    client.force_login(portal.member)
    live, _, _ = open_page(client, portal.team, status="unfinished")
    finish(task)
    answer = client.get(live, headers=HTMX)
    body = answer.content.decode()
    # The page was not empty before and is now: the table is redrawn (empty state).
    assert answer["HX-Retarget"] == "#task-table" and "No task matches these filters" in body

    kept = make_task(portal.team, portal.member, status=Status.PROCESSING, minutes=9)
    leaving = make_task(portal.team, portal.member, status=Status.PROCESSING, minutes=8)
    live, _, _ = open_page(client, portal.team, status="unfinished")
    finish(leaving)
    body = client.get(live, headers=HTMX).content.decode()
    assert (row(leaving), "delete") in swaps(body) and row(kept) not in body


def test_my_tasks_shows_only_my_new_tasks(client, portal):
    client.force_login(portal.member)
    make_task(portal.team, portal.member, minutes=5)
    live, active, _ = open_page(client, portal.team, name="tasks-mine")
    assert active and "/tasks/mine/live/" in live
    make_task(portal.team, portal.owner, prompt="not mine")
    mine = make_task(portal.team, portal.member, prompt="mine, other tab")
    body = client.get(live, headers=HTMX).content.decode()
    assert "not mine" not in body
    assert [swap[0] for swap in swaps(body) if swap[1].startswith("insert:")] == [row(mine)]


def test_stops_when_nothing_unfinished_and_no_new_task_can_appear(client, portal):
    for minutes in range(30):
        make_task(portal.team, portal.member, status=Status.SUCCEED, minutes=minutes + 1)
    running = make_task(portal.team, portal.member, status=Status.PROCESSING, minutes=60)
    client.force_login(portal.member)

    # Page 2 holds the running task: it polls until that task has finished...
    live, active, _ = open_page(client, portal.team, page=2)
    assert active
    finish(running)
    answer = client.get(live, headers=HTMX)
    assert answer.status_code == 286  # htmx stops polling
    body = answer.content.decode()
    assert (row(running), "true") in swaps(body)
    assert poller(body)[1] is False
    # ... and a page 2 of finished tasks does not poll at all: new tasks land on page 1.
    assert open_page(client, portal.team, page=2)[1] is False
    # Page 1 keeps polling: a teammate's task may arrive any time.
    assert open_page(client, portal.team)[1] is True
    # Filters that no new task can match: a finished status with nothing unfinished, or a
    # date range that ended yesterday.
    assert open_page(client, portal.team, status="succeed")[1] is False
    yesterday = (timezone.now() - timedelta(days=2)).date().isoformat()
    assert open_page(client, portal.team, date_to=yesterday)[1] is False
    # A task still running may finish into "succeed": that filter polls while one runs.
    make_task(portal.team, portal.owner, status=Status.PROCESSING)
    assert open_page(client, portal.team, status="succeed")[1] is True


def test_access(client, portal):
    make_task(portal.team, portal.member)
    client.force_login(portal.member)
    live, _, _ = open_page(client, portal.team)
    mine, _, _ = open_page(client, portal.team, name="tasks-mine")
    assert client.post(live, headers=HTMX).status_code == 405
    client.logout()
    assert client.get(live, headers=HTMX).status_code == 302
    client.force_login(portal.outsider)
    assert client.get(live, headers=HTMX).status_code == 404
    assert client.get(mine, headers=HTMX).status_code == 404
    client.force_login(portal.viewer)
    assert client.get(live, headers=HTMX).status_code == 200


def _live_queries(client, portal, rows: int) -> int:
    """Queries of one live request of page 1 with ``rows`` unfinished tasks in the team,
    every row of the page changed and a new task arrived since the page was drawn."""
    Task.objects.all().delete()
    for minutes in range(rows):
        make_task(portal.team, portal.member, status=Status.PROCESSING, minutes=minutes + 1)
    live, _, _ = open_page(client, portal.team)
    for task in Task.objects.all():
        task_status_move(
            task=task,
            to=Status.PROCESSING,
            source="poll",
            expected_from=["submitted", "processing"],
        )
        Task.objects.filter(pk=task.pk).update(is_stale=True)
    make_task(portal.team, portal.owner, prompt="new")
    with CaptureQueriesContext(connection) as queries:
        answer = client.get(live, headers=HTMX)
    assert answer.status_code == 200
    body = answer.content.decode()
    assert body.count('hx-swap-oob="true"') >= min(rows, 25)  # changed rows (+ the count)
    assert "beforebegin:#task-" in body  # the new task
    return len(queries)


def test_query_count_does_not_grow_with_rows(client, portal):
    client.force_login(portal.member)
    counts = [_live_queries(client, portal, rows) for rows in (3, 25, 100)]
    assert counts[0] == counts[1] == counts[2], counts


# -- elements: the library ---------------------------------------------------------------


def make_element(portal, **fields) -> Element:
    values = {
        "team": portal.team,
        "creator": portal.member,
        "name": "Hero",
        "status": ElementStatus.SUCCEED,
        "element_id": "",
        "kling_account": KlingAccount.objects.operator_default(),
    }
    values.update(fields)
    return Element.objects.create(**values)


def test_element_library_one_request(client, portal):
    creating = make_element(portal, name="Being made", status=ElementStatus.CREATING)
    make_element(portal, name="Old one", created_at=timezone.now() - timedelta(days=1))
    client.force_login(portal.viewer)
    live, active, body = open_page(client, portal.team, name="elements-list")
    assert active and "/elements/live/" in live and body.count('hx-trigger="every 3s"') == 1

    creating.status = ElementStatus.SUCCEED
    creating.element_id = "777"
    creating.save()
    new = make_element(portal, name="A teammate's element", creator=portal.owner)
    body = client.get(live, headers=HTMX).content.decode()
    assert swaps(body) == sorted(
        [
            (f"element-{creating.code}", "true"),
            (f"element-{new.code}", f"insert:beforebegin:#element-{creating.code}"),
            ("element-pages", "true"),
        ]
    )
    assert "Old one" not in body
    assert client.get(poller(body)[0], headers=HTMX).content.decode().count("<article") == 0


def test_element_library_stops_and_refuses_outsiders(client, portal):
    for index in range(30):
        make_element(portal, name=f"E{index}", created_at=timezone.now() - timedelta(hours=index))
    client.force_login(portal.member)
    live, active, _ = open_page(client, portal.team, name="elements-list", page=2)
    assert active is False
    assert client.get(live, headers=HTMX).status_code == 286
    assert open_page(client, portal.team, name="elements-list")[1] is True
    client.force_login(portal.outsider)
    assert client.get(live, headers=HTMX).status_code == 404


# -- the up-to-date answer: state columns only ---------------------------------------------


def _answer_of_full_path(user, team, live: str, *, mine: bool) -> tuple[int, str]:
    """The answer ``live_response`` builds from the full list context (``Task`` rows with
    creators and media) for the live request ``live`` of ``user``: what the page got
    before the check from the state columns."""
    from django.test import RequestFactory

    from klingweb.accounts.access import READ, team_for_user
    from tasks_app.live import live_full_answer

    request = RequestFactory().get(live, headers=HTMX)
    request.user = user
    access = team_for_user(request, team.code, methods=READ)
    response = live_full_answer(request, access, mine=mine)
    return response.status_code, response.content.decode()


@pytest.mark.parametrize("name", ["tasks-list", "tasks-mine"])
@pytest.mark.parametrize("unfinished", [True, False])
def test_up_to_date_page_is_checked_without_building_rows(client, portal, unfinished, name):
    """Nothing changed: the answer (the poller alone, 200 while a row is unfinished, else
    286 on an older page) is the one the full context gives, and it is computed from the
    state columns: no ``Task`` or ``TaskMedia`` object is made and no task's prompt,
    params or result, no creator, no media URL is read (the previous code made 25 tasks
    and their media for every poll, and joined the team's Kling account)."""
    from django.db.models.signals import post_init

    from tasks_app.models import TaskMedia

    status = Status.PROCESSING if unfinished else Status.SUCCEED
    tasks = [make_task(portal.team, portal.member, status=status, minutes=m) for m in range(30)]
    TaskMedia.objects.create(
        task=tasks[0],
        kind="video",
        source_url="https://cdn.example.com/a.mp4",
        file="results/a.mp4",
        kept_at=timezone.now(),
    )
    TaskMedia.objects.create(
        task=tasks[1], kind="video", source_url="https://cdn.example.com/b.mp4"
    )
    client.force_login(portal.member)
    page = "1" if unfinished else "2"  # page 2 of a finished list can no longer change
    live, _, _ = open_page(client, portal.team, name, page=page)

    made: list[str] = []

    def count(sender, **kwargs):
        made.append(sender.__name__)

    post_init.connect(count, sender=Task)
    post_init.connect(count, sender=TaskMedia)
    try:
        with CaptureQueriesContext(connection) as queries:
            answer = client.get(live, headers=HTMX)
    finally:
        post_init.disconnect(count, sender=Task)
        post_init.disconnect(count, sender=TaskMedia)

    assert answer.status_code == (200 if unfinished else 286)
    assert made == []
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    for column in ('"prompt"', '"params"', '"result"', '"source_url"'):
        assert column not in sql, column
    assert 'JOIN "auth_user"' not in sql  # no creator read with the rows
    assert "accounts_klingaccount" not in sql  # the access check reads no Kling account
    body = answer.content.decode()
    assert swaps(body) == [] and "<tr" not in body
    assert poller(body) == (live, unfinished)
    assert (answer.status_code, body) == _answer_of_full_path(
        portal.member, portal.team, live, mine=name == "tasks-mine"
    )
