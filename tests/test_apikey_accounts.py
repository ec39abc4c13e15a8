"""Kling credentials of both kinds, tested before use; queued tasks that follow the team's
account and can be cancelled; resource packs keyed by the whole credential.

Issue 13 item 1 (API keys besides access key + secret key), issue 14 "task lifecycle" and
items 1 and 7. Everything talks to the real sandbox over loopback; the sandbox is given an
API key the way ``kling_sandbox --api-key`` gives it one (``SandboxConfig.api_keys``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from klingweb.accounts import services
from klingweb.accounts.jobs import connection_test
from klingweb.accounts.models import CredentialKind, KlingAccount, Region, Team, VendorCall
from klingweb.redaction import redact
from klingweb.run import SANDBOX_API_KEY, banner, env_build, processes_for
from tasks_app import submission
from tasks_app.models import Status, Task
from tasks_app.resource_packs import resource_packs_latest, resource_packs_refresh
from tests.conftest import SANDBOX_AK, SANDBOX_SK

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "team-api-key-for-the-klingweb-tests-7Q2z"
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def api_sandbox(kling_settings, fresh_sandbox):
    """The sandbox accepting ``API_KEY`` as the Bearer of its own account (as
    ``kling_sandbox --api-key API_KEY`` does), the operator default on AK/SK."""
    fresh_sandbox.config.api_keys[API_KEY] = SANDBOX_AK
    yield fresh_sandbox
    fresh_sandbox.config.api_keys.pop(API_KEY, None)


@pytest.fixture
def sync_jobs(monkeypatch):
    """django-q2 runs enqueued jobs inline (``Conf.SYNC``)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


def _create_url(team: Team) -> str:
    return reverse("accounts-kling-create", kwargs={"team": team.code})


def _account_url(name: str, team: Team, account: KlingAccount) -> str:
    return reverse(name, kwargs={"team": team.code, "account": account.code})


def _test_connection(client, team: Team, account: KlingAccount) -> VendorCall:
    """Press "Test connection" and run its job as the cluster would."""
    client.post(_account_url("accounts-kling-test", team, account), **HX)
    call = VendorCall.objects.filter(subject=str(account.code)).latest("created_at")
    connection_test(call.pk)
    call.refresh_from_db()
    return call


def _add(client, team: Team, **data) -> KlingAccount:
    before = set(KlingAccount.objects.values_list("pk", flat=True))
    response = client.post(_create_url(team), {"name": "Ours", **data})
    assert response.status_code == 302, response.content.decode()[-3000:]
    return KlingAccount.objects.exclude(pk__in=before).get()


def _sandbox_form(sandbox, **extra) -> dict:
    return {"region": Region.CUSTOM, "custom_base_url": sandbox.base_url, **extra}


def _team_account(team: Team, sandbox, *, secret: str) -> KlingAccount:
    account = KlingAccount(
        team=team,
        name="Team keys",
        region=Region.CUSTOM,
        custom_base_url=sandbox.base_url,
        access_key=SANDBOX_AK,
    )
    services.account_set_secret(account=account, secret_key=secret)
    account.save()
    return account


def _queued(team: Team, user) -> Task:
    body = {"model_name": "kling-v1-6", "prompt": "a fox", "mode": "std", "duration": "5"}
    return submission.task_queue(
        team=team, user=user, family="text2video", params=body, prompt="a fox"
    )


def _sent(team: Team, user) -> Task:
    """A task queued and then sent (what its job does once the request commits)."""
    task = _queued(team, user)
    submission.task_submit(task_pk=task.pk)
    task.refresh_from_db()
    return task


# -- credentials of both kinds ------------------------------------------------------------


def test_api_key_account_from_the_form_sends_the_key_as_bearer_and_works(
    client, portal, api_sandbox, sync_jobs
):
    client.force_login(portal.admin)
    account = _add(
        client,
        portal.team,
        **_sandbox_form(api_sandbox, credential_kind=CredentialKind.API_KEY, api_key=API_KEY),
    )
    assert account.credential_kind == CredentialKind.API_KEY
    assert account.access_key == "" and account.secret_key_encrypted == ""
    assert API_KEY not in account.api_key_encrypted
    assert services.secret_decrypt(account.api_key_encrypted) == API_KEY
    # Adding does not switch the team.
    assert Team.objects.get(pk=portal.team.pk).kling_account_id is None

    call = _test_connection(client, portal.team, account)
    assert call.status == "done", call.error_message
    # The new design's /tasks answers API keys only (a JWT gets 401 there): the portal's
    # client for this account authenticates with the key itself.
    assert services.kling_client_for(account).get_tasks(external_task_ids=["nothing-here"]) == []

    # Tested: the switch needs no confirmation, and a task goes through the API key.
    response = client.post(_account_url("accounts-kling-use", portal.team, account), follow=True)
    assert "The team now uses Ours." in response.content.decode()
    task = _sent(portal.team, portal.member)
    assert task.status == Status.SUBMITTED, task.error_message
    assert task.kling_account_id == account.pk


def test_access_key_and_secret_key_account_still_works(client, portal, api_sandbox, sync_jobs):
    client.force_login(portal.owner)
    account = _add(
        client,
        portal.team,
        **_sandbox_form(
            api_sandbox,
            credential_kind=CredentialKind.ACCESS_KEY,
            access_key=SANDBOX_AK,
            secret_key=SANDBOX_SK,
        ),
    )
    assert account.credential_kind == CredentialKind.ACCESS_KEY and not account.uses_api_key
    assert _test_connection(client, portal.team, account).status == "done"
    client.post(_account_url("accounts-kling-use", portal.team, account))
    task = _sent(portal.team, portal.member)
    assert task.status == Status.SUBMITTED and task.kling_account_id == account.pk


def test_wrong_api_key_fails_its_connection_test(client, portal, api_sandbox, sync_jobs):
    client.force_login(portal.admin)
    account = _add(
        client,
        portal.team,
        **_sandbox_form(
            api_sandbox, credential_kind=CredentialKind.API_KEY, api_key="not-the-key-0000"
        ),
    )
    call = _test_connection(client, portal.team, account)
    assert call.status == "failed" and call.error_kind == "vendor"
    assert call.error_http_status == 401


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"credential_kind": "api_key"}, "api_key", "Enter the API key."),
        (
            {"credential_kind": "api_key", "api_key": API_KEY, "access_key": "ak"},
            "credential_kind",
            "An API-key account has no access key or secret key",
        ),
        (
            {"credential_kind": "access_key", "access_key": "ak", "api_key": API_KEY},
            "credential_kind",
            "An access key + secret key account has no API key",
        ),
        (
            {"credential_kind": "access_key", "secret_key": "sk-0000"},
            "access_key",
            "Enter the access key.",
        ),
        (
            {"credential_kind": "access_key", "access_key": "ak"},
            "secret_key",
            "Enter the secret key.",
        ),
        ({"credential_kind": "api_key", "api_key": "has a space"}, "api_key", "paste it again"),
        ({"credential_kind": "nonsense", "api_key": API_KEY}, "credential_kind", "Select a valid"),
    ],
)
def test_account_form_refuses_mixed_or_missing_credentials(client, portal, data, field, message):
    client.force_login(portal.admin)
    response = client.post(_create_url(portal.team), {"name": "X", "region": "singapore", **data})
    assert response.status_code == 200
    form = response.context["form"]
    assert any(message in error for error in form.errors[field]), form.errors
    assert API_KEY not in response.content.decode()  # never echoed back
    assert not KlingAccount.objects.filter(team=portal.team).exists()


def test_keys_show_only_their_last_4_characters(client, portal, api_sandbox):
    client.force_login(portal.admin)
    account = _add(
        client,
        portal.team,
        **_sandbox_form(api_sandbox, credential_kind=CredentialKind.API_KEY, api_key=API_KEY),
    )
    assert account.api_key_last4 == API_KEY[-4:]
    for url in (
        _account_url("accounts-kling-detail", portal.team, account),
        reverse("accounts-settings", kwargs={"team": portal.team.code}),
    ):
        html = client.get(url).content.decode()
        assert f"…{API_KEY[-4:]}" in html
        assert API_KEY not in html and account.api_key_encrypted not in html
    # Editing with a blank key keeps it; switching kind needs the other kind's keys.
    detail = _account_url("accounts-kling-detail", portal.team, account)
    form = _sandbox_form(api_sandbox, name="Renamed", credential_kind=CredentialKind.API_KEY)
    assert client.post(detail, form).status_code == 302
    account.refresh_from_db()
    assert account.name == "Renamed"
    assert services.secret_decrypt(account.api_key_encrypted) == API_KEY
    response = client.post(detail, {**form, "credential_kind": CredentialKind.ACCESS_KEY})
    assert "Enter the access key." in response.content.decode()


def test_api_key_is_redacted_from_logs(settings, caplog):
    settings.KLING_API_KEY = API_KEY
    assert API_KEY not in redact(f"configured with {API_KEY}")
    assert API_KEY not in redact(f"Authorization: Bearer {API_KEY}")
    from klingweb.redaction import RedactingFilter

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", (API_KEY,), None)
    RedactingFilter().filter(record)
    assert API_KEY not in record.getMessage()


def test_rotation_re_encrypts_api_keys(portal):
    account = KlingAccount(team=portal.team, name="K", region=Region.SINGAPORE)
    services.account_set_api_key(account=account, api_key=API_KEY)
    account.save()
    before = account.api_key_encrypted
    rotated, unreadable = services.secrets_rotate_all()
    account.refresh_from_db()
    assert rotated >= 1 and not unreadable
    assert account.api_key_encrypted != before
    assert services.secret_decrypt(account.api_key_encrypted) == API_KEY


# -- the operator's default account -------------------------------------------------------


def test_operator_default_with_only_an_api_key_sends_it(api_sandbox, settings, portal, sync_jobs):
    settings.KLING_ACCESS_KEY = settings.KLING_SECRET_KEY = ""
    settings.KLING_API_KEY = API_KEY
    default = KlingAccount.objects.operator_default()
    assert default.uses_api_key
    assert services.kling_client_for(default).get_tasks(external_task_ids=["none"]) == []
    task = _sent(portal.team, portal.member)
    assert task.status == Status.SUBMITTED and task.kling_account_id == default.pk


def test_both_kinds_of_operator_credentials_fail_at_start_up():
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environ.update(KLING_API_KEY=API_KEY, KLING_ACCESS_KEY="ak", KLING_SECRET_KEY="sk")
    out = subprocess.run(
        [sys.executable, "-c", "import klingweb.settings"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr
    assert "not both kinds" in out.stderr
    from klingweb.run import RunError

    with pytest.raises(RunError, match="not both kinds"):
        env_build(
            base={"KLING_API_KEY": API_KEY, "KLING_ACCESS_KEY": "ak"}, file_vars={}, port=8001
        )


def test_make_run_with_only_an_api_key_at_the_local_sandbox_gives_the_sandbox_the_key():
    env, sandbox = env_build(
        base={
            "PATH": "/bin",
            "KLING_API_KEY": API_KEY,
            "KLING_API_BASE_URL": "http://127.0.0.1:8701",
        },
        file_vars={},
        port=8001,
        sandbox_port=8701,
    )
    assert sandbox and processes_for(sandbox_mode=sandbox)[-1] == "sandbox"
    # The portal uses the key alone (settings refuse both kinds) ...
    assert env["KLING_API_KEY"] == API_KEY and "KLING_ACCESS_KEY" not in env
    # ... and the sandbox process accepts it (the Procfile passes it as --api-key).
    assert env["KLING_SANDBOX_API_KEY"] == API_KEY
    assert API_KEY not in banner(env=env, port=8001, sandbox_mode=sandbox)  # never printed
    procfile = (ROOT / "Procfile").read_text()
    sandbox_line = next(line for line in procfile.splitlines() if line.startswith("sandbox:"))
    assert '--api-key "$KLING_SANDBOX_API_KEY"' in sandbox_line
    assert '--access-key "$KLING_SANDBOX_ACCESS_KEY"' in sandbox_line
    # An API key without the local sandbox's address is the real Kling: no sandbox.
    env, sandbox = env_build(base={"KLING_API_KEY": API_KEY}, file_vars={}, port=8001)
    assert not sandbox and env["KLING_API_KEY"] == API_KEY
    # No credentials at all: the sandbox on a key pair, and an API key for teams' accounts.
    env, sandbox = env_build(base={}, file_vars={}, port=8001)
    assert sandbox and env["KLING_SANDBOX_API_KEY"] == SANDBOX_API_KEY
    assert "KLING_API_KEY" not in env


def test_kling_sandbox_command_accepts_the_api_key_it_is_given():
    """The Procfile's sandbox line, run for real: the key given by flag authenticates."""
    from klingweb.kling import KlingClient

    environ = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    environ["KLING_API_KEY"] = API_KEY
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "kling_sandbox",
            "--port",
            "0",
            "--quiet",
            "--access-key",
            "",
            "--secret-key",
            "",
            "--api-key",
            API_KEY,
        ],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() else ""
        client = KlingClient(api_key=API_KEY, base_url=base_url)
        assert client.get_tasks(external_task_ids=["nothing"]) == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- tested before use --------------------------------------------------------------------


def test_switching_to_a_failed_or_untested_account_needs_confirmation(
    client, portal, api_sandbox, sync_jobs
):
    client.force_login(portal.admin)
    account = _team_account(portal.team, api_sandbox, secret="wrong-secret-0123456789")
    use = _account_url("accounts-kling-use", portal.team, account)

    # Never tested: refused, nothing changes; the answer offers "Use anyway".
    response = client.post(use)
    assert response.status_code == 409
    assert "has not been tested" in response.content.decode()
    assert 'name="confirm" value="1"' in response.content.decode()
    assert Team.objects.get(pk=portal.team.pk).kling_account_id is None

    # Tested and failed: still refused, the HTMX answer says why.
    assert _test_connection(client, portal.team, account).status == "failed"
    html = client.post(use, **HX).content.decode()
    assert "its last connection test failed" in html and "anyway" in html
    assert Team.objects.get(pk=portal.team.pk).kling_account_id is None

    # Confirmed: switched.
    html = client.post(use, {"confirm": "1"}, **HX).content.decode()
    assert "The team now uses Team keys." in html
    assert Team.objects.get(pk=portal.team.pk).kling_account_id == account.pk


def test_a_passed_test_no_longer_counts_once_the_credential_changes(
    client, portal, api_sandbox, sync_jobs
):
    client.force_login(portal.admin)
    account = _team_account(portal.team, api_sandbox, secret=SANDBOX_SK)
    assert _test_connection(client, portal.team, account).status == "done"
    assert services.account_test_state(team=portal.team, account=account) == "passed"
    services.account_set_secret(account=account, secret_key="another-secret-0123456789")
    account.save()
    assert services.account_test_state(team=portal.team, account=account) == "untested"
    # The old answer (packs fetched with the old secret) is not shown for the new one.
    html = client.get(_account_url("accounts-kling-detail", portal.team, account)).content
    assert b"Connected." not in html and b"not tested with these credentials" in html
    assert client.post(_account_url("accounts-kling-use", portal.team, account)).status_code == 409


def test_an_account_saved_before_credential_hashes_can_pass_its_test(
    client, portal, api_sandbox, sync_jobs
):
    client.force_login(portal.admin)
    account = _team_account(portal.team, api_sandbox, secret=SANDBOX_SK)
    KlingAccount.objects.filter(pk=account.pk).update(credential_hash="")
    account.refresh_from_db()
    assert _test_connection(client, portal.team, account).status == "done"
    account.refresh_from_db()
    assert account.credential_hash
    assert services.account_test_state(team=portal.team, account=account) == "passed"


# -- queued tasks follow the team's account -----------------------------------------------


def test_queued_task_on_a_broken_account_is_sent_through_the_new_one_after_a_switch(
    portal, api_sandbox
):
    broken = _team_account(portal.team, api_sandbox, secret="wrong-secret-0123456789")
    services.account_use(team=portal.team, account=broken, confirmed=True)
    task = _queued(portal.team, portal.member)
    assert submission.task_submit(task_pk=task.pk) == submission.PAUSED
    task.refresh_from_db()
    broken.refresh_from_db()
    assert task.status == Status.QUEUED and broken.is_paused
    assert task.kling_account_id is None  # Kling refused the credentials: nothing was created
    assert "refused the credentials" in task.error_message

    # The admin switches the team to a working account (an API key, tested).
    good = KlingAccount(
        team=portal.team, name="Good", region=Region.CUSTOM, custom_base_url=api_sandbox.base_url
    )
    services.account_set_api_key(account=good, api_key=API_KEY)
    good.save()
    services.account_use(team=Team.objects.get(pk=portal.team.pk), account=good, confirmed=True)
    Task.objects.filter(pk=task.pk).update(retry_at=task.created_at)  # due now
    assert submission.tasks_submit_due() == 1
    task.refresh_from_db()
    assert task.status == Status.SUBMITTED and task.kling_account_id == good.pk
    sent = [t for t in api_sandbox.tasks_snapshot() if t["external_task_id"] == str(task.code)]
    assert len(sent) == 1


def test_a_task_waiting_on_a_paused_account_goes_at_the_first_cycle_after_a_switch(
    portal, api_sandbox
):
    """No waiting out the paused account's recheck (``PAUSED_RECHECK_SECONDS``, 60 s by
    default): the poller's next cycle sends the task through the team's new account."""
    from tasks_app.polling import poll_cycle

    broken = _team_account(portal.team, api_sandbox, secret="wrong-secret-0123456789")
    services.account_use(team=portal.team, account=broken, confirmed=True)
    task = _queued(portal.team, portal.member)
    assert submission.task_submit(task_pk=task.pk) == submission.PAUSED
    task.refresh_from_db()
    assert task.retry_at > timezone.now() + timedelta(seconds=50)  # the default recheck
    poll_cycle()  # the account is still the team's and still paused: nothing is sent
    task.refresh_from_db()
    assert task.status == Status.QUEUED and task.submit_attempts == 1

    other = _team_account(portal.team, api_sandbox, secret=SANDBOX_SK)
    services.account_use(team=Team.objects.get(pk=portal.team.pk), account=other, confirmed=True)
    poll_cycle()
    task.refresh_from_db()
    assert task.status == Status.SUBMITTED and task.kling_account_id == other.pk
    sent = [t for t in api_sandbox.tasks_snapshot() if t["external_task_id"] == str(task.code)]
    assert len(sent) == 1


def test_a_task_waiting_after_an_unknown_answer_stays_with_its_account(portal, api_sandbox):
    """A create that timed out may have created the task: it is asked for on the same
    account, never re-created through another one."""
    api_sandbox.config.error_rate = 1.0  # every call 5000: the answer is unknown
    try:
        task = _queued(portal.team, portal.member)
        assert submission.task_submit(task_pk=task.pk) == submission.RETRY
    finally:
        api_sandbox.reset_faults()
    task.refresh_from_db()
    default = KlingAccount.objects.operator_default()
    assert task.kling_account_id == default.pk
    other = _team_account(portal.team, api_sandbox, secret=SANDBOX_SK)
    services.account_use(team=Team.objects.get(pk=portal.team.pk), account=other, confirmed=True)
    assert submission.task_submit(task_pk=task.pk) == submission.SUBMITTED
    task.refresh_from_db()
    assert task.kling_account_id == default.pk


# -- cancel -------------------------------------------------------------------------------


def _cancel_url(task: Task) -> str:
    return reverse("tasks-cancel", kwargs={"team": task.team.code, "code": task.code})


@pytest.fixture
def no_jobs(monkeypatch):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: None)


def test_member_cancels_own_queued_task_nothing_sent_nor_charged(client, portal, no_jobs):
    from tasks_app.budgets import budget_status
    from tasks_app.models import Budget

    task = _queued(portal.team, portal.member)
    budget = Budget.objects.create(team=portal.team, period="month", units=100)
    assert budget_status(budget=budget).pending > 0  # the estimate holds the budget
    client.force_login(portal.member)
    page = client.get(reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code}))
    assert _cancel_url(task) in page.content.decode()
    html = client.post(_cancel_url(task), **HX).content.decode()
    assert "Task cancelled. Nothing was sent to Kling" in html
    task.refresh_from_db()
    assert task.status == Status.CANCELLED and task.final_unit_deduction is None
    assert task.task_id == "" and task.kling_account_id is None
    assert budget_status(budget=budget).pending == 0  # the estimate is released
    assert list(task.events.values_list("status", flat=True)) == ["queued", "cancelled"]
    # The cancelled task is never sent by the safety net.
    Task.objects.filter(pk=task.pk).update(retry_at=task.created_at)
    assert submission.tasks_submit_due() == 0


def test_admin_cancels_anyones_task_from_the_row(client, portal, no_jobs):
    task = _queued(portal.team, portal.member)
    client.force_login(portal.admin)
    response = client.post(
        _cancel_url(task), HTTP_HX_REQUEST="true", HTTP_HX_TARGET=f"task-{task.code}"
    )
    html = response.content.decode()
    assert html.lstrip().startswith(f'<tr id="task-{task.code}"')
    assert "Cancelled" in html
    task.refresh_from_db()
    assert task.status == Status.CANCELLED


def test_other_member_viewer_outsider_and_get_are_refused(client, portal, no_jobs):
    from klingweb.accounts.models import Membership, Role
    from tests.conftest import make_user

    task = _queued(portal.team, portal.member)
    other = make_user("other-member")
    Membership.objects.create(user=other, team=portal.team, role=Role.MEMBER)
    for user, status in ((other, 403), (portal.viewer, 403), (portal.outsider, 404)):
        client.force_login(user)
        assert client.post(_cancel_url(task)).status_code == status
        assert client.post(_cancel_url(task), **HX).status_code == status
    client.force_login(portal.member)
    assert client.get(_cancel_url(task)).status_code == 405
    client.logout()
    assert client.post(_cancel_url(task)).status_code == 302  # to the sign-in page
    task.refresh_from_db()
    assert task.status == Status.QUEUED


def test_cancelling_a_sent_task_is_refused(client, portal, kling_settings, sync_jobs):
    task = _sent(portal.team, portal.member)
    assert task.status == Status.SUBMITTED
    client.force_login(portal.member)
    response = client.post(_cancel_url(task), follow=True)
    assert "already sent to Kling" in response.content.decode()
    task.refresh_from_db()
    assert task.status == Status.SUBMITTED


def test_cancelling_a_task_whose_create_may_have_reached_kling_is_refused(portal, api_sandbox):
    api_sandbox.config.error_rate = 1.0
    try:
        task = _queued(portal.team, portal.member)
        assert submission.task_submit(task_pk=task.pk) == submission.RETRY
    finally:
        api_sandbox.reset_faults()
    with pytest.raises(submission.TaskNotCancellable, match="may have reached Kling"):
        submission.task_cancel(task_pk=task.pk, by="member")
    task.refresh_from_db()
    assert task.status == Status.QUEUED


# -- resource packs keyed by the whole credential ------------------------------------------


def test_packs_are_never_shown_for_another_credential(portal, api_sandbox):
    """Same base URL and access key as the operator, wrong secret: the account's fetch
    fails on its own and it never shows the operator's packs (issue 14 item 7)."""
    wrong = _team_account(portal.team, api_sandbox, secret="wrong-secret-0123456789")
    report = resource_packs_refresh()
    default = KlingAccount.objects.operator_default()
    assert default.pk in report.fetched and wrong.pk in report.failed
    latest = {entry.account.pk: entry for entry in resource_packs_latest()}
    assert latest[default.pk].packs
    assert latest[wrong.pk].packs == [] and latest[wrong.pk].error

    # Once the secret is right the account's own fetch shows packs; a later change of
    # credential hides them again until fetched with the new one.
    services.account_set_secret(account=wrong, secret_key=SANDBOX_SK)
    wrong.save()
    resource_packs_refresh(now=timezone.now() + timedelta(seconds=2))  # past the 1/s limit
    assert {e.account.pk: e for e in resource_packs_latest()}[wrong.pk].packs
    services.account_set_api_key(account=wrong, api_key="another-key-not-fetched")
    wrong.save()
    assert wrong.pk not in {e.account.pk for e in resource_packs_latest()}


def test_a_refused_api_key_pauses_the_account_naming_the_key_not_a_secret(portal, api_sandbox):
    wrong = KlingAccount(
        team=portal.team, name="Typo", region=Region.CUSTOM, custom_base_url=api_sandbox.base_url
    )
    services.account_set_api_key(account=wrong, api_key="kling-key-with-a-typo-0123456789")
    wrong.save()
    services.account_use(team=portal.team, account=wrong, confirmed=True)
    task = _queued(portal.team, portal.member)
    assert submission.task_submit(task_pk=task.pk) == submission.PAUSED
    wrong.refresh_from_db()
    task.refresh_from_db()
    assert wrong.is_paused and "refused the API key" in wrong.paused_message
    assert "secret key" not in wrong.paused_message and "clock" not in wrong.paused_message
    assert "refused the API key" in task.error_message
