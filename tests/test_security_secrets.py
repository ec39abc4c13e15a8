"""Secrets never leave the places they belong: not a page, a log line or an error report.

A team's Kling account and the operator's default account get recognisable secret keys on a
sandbox of their own; a webhook secret is set. Then people use the portal the way they
would: an admin adds the credentials, edits them, tests the connection (good and bad keys),
a task is submitted with a callback URL and its callbacks delivered (including a malformed
and an expired one, which Django logs), every task, settings, usage and Django admin page is
opened. Every response body and every log record (caplog at DEBUG, httpx, httpcore and
klingweb included) is searched for the secret keys, their ciphertext, any JWT
(``eyJ….eyJ….…``), ``Bearer`` credentials and the callback token. Error reports (the
DEBUG page, the mail to ADMINS, a traceback through the client with a JWT and a secret in
its local variables) are searched the same way. Stored keys are Fernet ciphertext.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.views.debug import get_exception_reporter_class

from klingweb.accounts import services
from klingweb.accounts.jobs import connection_test
from klingweb.accounts.models import KlingAccount, VendorCall
from klingweb.kling import KlingClient
from klingweb.sandbox import SandboxConfig, SandboxServer
from tasks_app import submission
from tasks_app.callbacks import callback_token_for
from tasks_app.models import Task
from tests.conftest import make_user

TEAM_AK = "AK-TEAM-SENTINEL-51f0"
TEAM_SK = "SK-TEAM-SENTINEL-9c1e5b7d2f0a3c6e8b1d4f7a"
OPERATOR_AK = "AK-OPERATOR-SENTINEL-77aa"
OPERATOR_SK = "SK-OPERATOR-SENTINEL-4a8b6c0e1d3f5a7c9e2b"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"WEBHOOK-SENTINEL-0123456789abcdef").decode()
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
BEARER = re.compile(r"Bearer\s+(?!\[redacted\])\S{8,}", re.IGNORECASE)


@pytest.fixture(scope="module")
def vendor():
    """A sandbox of this module's own, knowing both recognisable key pairs."""
    server = SandboxServer(
        SandboxConfig(accounts={TEAM_AK: TEAM_SK, OPERATOR_AK: OPERATOR_SK}, task_seconds=0.3),
        host="127.0.0.1",
        port=0,
    ).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path, vendor, monkeypatch):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.KLING_API_BASE_URL = vendor.base_url
    settings.KLING_ACCESS_KEY = OPERATOR_AK
    settings.KLING_SECRET_KEY = OPERATOR_SK
    settings.KLING_WEBHOOK_SECRET = ""
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:9"  # callbacks go nowhere; we deliver them
    settings.AXES_ENABLED = False
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: None)
    services._clients.clear()


class Findings:
    """Collects every text the test saw, and says where a secret showed up."""

    def __init__(self):
        self.texts: list[tuple[str, str]] = []
        self.tokens: list[str] = []

    def add(self, where: str, text) -> str:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.texts.append((where, text))
        return text

    def page(self, where: str, response) -> str:
        if getattr(response, "streaming", False):
            body = b"".join(response.streaming_content)
        else:
            body = response.content
        headers = "\n".join(f"{k}: {v}" for k, v in response.items())
        return self.add(f"{where} [{response.status_code}]", headers + "\n" + body.decode())

    def leaks(self, extra_secrets: list[str] = ()) -> list[str]:
        secrets = [TEAM_SK, OPERATOR_SK, WEBHOOK_SECRET, *extra_secrets]
        ciphertexts = list(
            KlingAccount.objects.exclude(secret_key_encrypted="").values_list(
                "secret_key_encrypted", flat=True
            )
        )
        found = []
        for where, text in self.texts:
            for secret in secrets + ciphertexts + self.tokens:
                if secret and secret in text:
                    found.append(f"{where}: contains {secret[:12]}…")
            for pattern, name in ((JWT, "a JWT"), (BEARER, "a Bearer credential")):
                match = pattern.search(text)
                if match:
                    found.append(f"{where}: contains {name} {match.group(0)[:24]}…")
        return found


def _log_text(caplog) -> list[tuple[str, str]]:
    out = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        text = formatter.format(record)
        out.append((f"log {record.name}", text))
    return out


def test_stored_keys_are_ciphertext(portal):
    client = Client()
    client.force_login(portal.admin)
    url = reverse("accounts-kling-create", kwargs={"team": portal.team.code})
    data = {
        "name": "Ours",
        "credential_kind": "access_key",
        "region": "singapore",
        "access_key": TEAM_AK,
        "secret_key": TEAM_SK,
    }
    assert client.post(url, data).status_code == 302
    account = KlingAccount.objects.get(team=portal.team)
    assert account.secret_key_encrypted and TEAM_SK not in account.secret_key_encrypted
    assert account.secret_key_encrypted.startswith("gAAAAA")  # a Fernet token
    assert services.secret_decrypt(account.secret_key_encrypted) == TEAM_SK
    assert account.secret_key_last4 == TEAM_SK[-4:]
    for row in KlingAccount.objects.values():
        assert TEAM_SK not in json.dumps(row, default=str)


def test_no_secret_token_or_jwt_in_pages_or_logs(portal, vendor, caplog):
    for name in ("", "httpx", "httpcore", "klingweb", "tasks_app", "elements_app", "django"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    seen = Findings()
    team = portal.team.code
    admin = Client(raise_request_exception=False)
    admin.force_login(portal.admin)

    # An admin adds the team's credentials (the custom region: our sandbox) and uses them.
    create = reverse("accounts-kling-create", kwargs={"team": team})
    form = {
        "name": "Ours",
        "credential_kind": "access_key",
        "region": "custom",
        "custom_base_url": vendor.base_url,
        "access_key": TEAM_AK,
        "secret_key": TEAM_SK,
    }
    seen.page("kling create (bad form)", admin.post(create, {**form, "access_key": ""}))
    seen.page("kling create", admin.post(create, form, follow=True))
    account = KlingAccount.objects.get(team=portal.team)
    detail = reverse("accounts-kling-detail", kwargs={"team": team, "account": account.code})
    seen.page("kling detail", admin.get(detail))
    seen.page("kling edit (bad form)", admin.post(detail, {**form, "name": ""}))
    seen.page(
        "kling edit (blank secret)", admin.post(detail, {**form, "secret_key": ""}, follow=True)
    )
    test = reverse("accounts-kling-test", kwargs={"team": team, "account": account.code})
    seen.page("test connection", admin.post(test))
    seen.page("test connection (HTMX)", admin.post(test, HTTP_HX_REQUEST="true"))
    # The test runs as a job (issue 12); its answer is shown on the account page.
    connection_test(VendorCall.objects.get(subject=str(account.code)).pk)
    seen.page("test connection (answer)", admin.get(detail))
    # The test passed, so switching the team to the account needs no confirmation.
    use = reverse("accounts-kling-use", kwargs={"team": team, "account": account.code})
    seen.page("use account", admin.post(use, follow=True))
    seen.page("settings", admin.get(reverse("accounts-settings", kwargs={"team": team})))

    # A task goes to Kling with a callback URL; the sandbox "delivers" its callbacks.
    portal.team.refresh_from_db()
    assert portal.team.kling_account_id == account.pk
    task = submission.task_queue(
        team=portal.team,
        user=portal.member,
        family="text2video",
        params={"model_name": "kling-v1-6", "prompt": "a fox", "mode": "std", "duration": "5"},
        prompt="a fox",
    )
    submission.task_submit(task_pk=task.pk)
    task.refresh_from_db()
    assert task.task_id, task.error_message
    token = callback_token_for(task)
    seen.tokens.append(token)
    vendor.advance(1.0)
    vendor.wait_callbacks(5)
    deliveries = [e for e in vendor.callbacks_log if e.get("task_id") == task.task_id]
    assert deliveries and token in deliveries[0]["url"]
    anyone = Client(raise_request_exception=False)
    for entry in deliveries:
        path = urlsplit(entry["url"]).path
        seen.page("callback", anyone.post(path, json.dumps(entry["body"]), "application/json"))
    path = urlsplit(deliveries[0]["url"]).path
    seen.page("callback (malformed)", anyone.post(path, "nope", "application/json"))
    seen.page("callback (GET)", anyone.get(path))

    # Every page of the task, as a viewer and as the admin; usage; the lists.
    viewer = Client(raise_request_exception=False)
    viewer.force_login(portal.viewer)
    for name in ("tasks-detail", "tasks-row", "tasks-json"):
        url = reverse(name, kwargs={"team": team, "code": task.code})
        seen.page(name, viewer.get(url))
        seen.page(f"{name} (HTMX)", viewer.get(url, HTTP_HX_REQUEST="true"))
    for name in ("tasks-list", "tasks-mine", "usage-team", "tasks-budgets", "elements-list"):
        seen.page(name, admin.get(reverse(name, kwargs={"team": team})))
    seen.page(
        "tasks-create (run again)",
        admin.get(
            reverse("tasks-create", kwargs={"team": team, "family": "text2video"})
            + f"?from={task.code}"
        ),
    )

    # The token expires: the refusal is logged (django.request) without the token.
    Task.objects.filter(pk=task.pk).update(
        created_at=timezone.now() - timedelta(days=10), submitted_at=None
    )
    seen.page("callback (expired)", anyone.post(path, "{}", "application/json"))

    # Django admin, as a superuser.
    root = make_user("root", is_staff=True, is_superuser=True)
    superuser = Client(raise_request_exception=False)
    superuser.force_login(root)
    operator = KlingAccount.objects.operator_default()
    for url in (
        reverse("admin:accounts_klingaccount_change", args=[account.pk]),
        reverse("admin:accounts_klingaccount_change", args=[operator.pk]),
        reverse("admin:accounts_klingaccount_changelist"),
        reverse("admin:tasks_app_task_change", args=[task.pk]),
        reverse("admin:tasks_app_task_changelist"),
        reverse("admin:tasks_app_taskevent_changelist"),
    ):
        seen.page(f"admin {url}", superuser.get(url))

    # The client used directly: operator and team keys, queries and account costs.
    client = services.kling_client_for(account)
    seen.add("repr", repr(client) + repr(client.signer))
    client.account_costs(start_time=timezone.now() - timedelta(days=1), end_time=timezone.now())
    client.get_task("text2video", task_id=task.task_id)
    op_client = services.kling_client_for(operator)
    op_client.list_tasks("text2video")
    with pytest.raises(Exception):  # noqa: B017 - any vendor refusal will do
        op_client.get_task("text2video", task_id="no-such-task")

    for where, text in _log_text(caplog):
        seen.add(where, text)
    assert any("HTTP Request" in t for _, t in seen.texts), "httpx was not captured"
    leaks = seen.leaks()
    assert not leaks, "Secrets shown:\n" + "\n".join(leaks)


def test_wrong_keys_show_the_vendors_error_and_no_secret(portal, vendor):
    account = KlingAccount(
        team=portal.team,
        name="Wrong",
        region="custom",
        custom_base_url=vendor.base_url,
        access_key=TEAM_AK,
    )
    wrong = "SK-WRONG-SENTINEL-0f9e8d7c6b5a4"
    services.account_set_secret(account=account, secret_key=wrong)
    account.save()
    admin = Client()
    admin.force_login(portal.admin)
    url = reverse("accounts-kling-test", kwargs={"team": portal.team.code, "account": account.code})
    admin.post(url)
    connection_test(VendorCall.objects.get(subject=str(account.code)).pk)  # the job (issue 12)
    detail = reverse(
        "accounts-kling-detail", kwargs={"team": portal.team.code, "account": account.code}
    )
    body = admin.get(detail).content.decode()
    assert "code 1" in body or "100" in body  # the vendor's authentication code is shown
    seen = Findings()
    seen.add("test connection (wrong key)", body)
    assert not seen.leaks([wrong])


def _reports(exc_info, request=None) -> list[tuple[str, str]]:
    reporter = get_exception_reporter_class(request)(request, *exc_info)
    return [
        ("report html", reporter.get_traceback_html()),
        ("report text", reporter.get_traceback_text()),
    ]


@pytest.mark.parametrize("debug", [False, True])
def test_error_reports_hide_secrets_and_jwts(db, settings, debug):
    settings.DEBUG = debug
    seen = Findings()
    client = KlingClient(access_key=TEAM_AK, secret_key=TEAM_SK, base_url="http://127.0.0.1:9")
    jwt_value = client.token()
    assert JWT.fullmatch(jwt_value)
    # A failure inside the client, with the JWT in a local ``headers`` dict.
    try:
        client._exchange("GET", "/v1/videos/text2video/\x00")
    except Exception:
        for where, text in _reports(sys.exc_info()):
            seen.add(f"{where} (exchange)", text)
    # A failure while building a client, with the secret key in local variables.
    try:
        KlingClient(access_key=TEAM_AK, secret_key=TEAM_SK, base_url="http://[::1")
    except Exception:
        for where, text in _reports(sys.exc_info()):
            seen.add(f"{where} (init)", text)
    assert len(seen.texts) == 4
    assert not seen.leaks([jwt_value]), "\n".join(seen.leaks([jwt_value]))


def test_500_in_the_callback_receiver_reports_no_token(portal, settings, monkeypatch):
    settings.ADMINS = [("Ops", "ops@example.com")]
    task = Task.objects.create(team=portal.team, family="text2video", task_id="kt-500")
    token = callback_token_for(task)

    def boom(**kwargs):
        raise RuntimeError("apply failed")

    monkeypatch.setattr("tasks_app.callbacks.task_apply_remote", boom)
    seen = Findings()
    seen.tokens.append(token)
    body = json.dumps({"task_id": "kt-500", "task_status": "processing"})
    path = reverse("tasks-callback", kwargs={"token": token})
    for debug in (True, False):
        settings.DEBUG = debug
        response = Client(raise_request_exception=False).post(path, body, "application/json")
        assert response.status_code == 500
        seen.page(f"500 page (DEBUG={debug})", response)
    assert mail.outbox, "the error mail to ADMINS was not sent"
    for message in mail.outbox:
        seen.add("error mail", message.subject + "\n" + message.body)
        for content, _ in getattr(message, "alternatives", []):
            seen.add("error mail html", content)
    leaks = seen.leaks()
    assert not leaks, "\n".join(leaks)


def test_gunicorn_access_log_lines_are_redacted():
    """``klingweb.wsgi`` puts the redaction filter on gunicorn's access log, which logs
    every request line (a callback's path carries its token) with a dict of atoms."""
    import klingweb.wsgi  # noqa: F401 - installs the filter, as gunicorn's import does

    captured: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            captured.append(record.getMessage())

    access = logging.getLogger("gunicorn.access")
    handler = Keep()
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    token = "0b4c3a5e-1111-2222-3333-444455556666:SIGNATURE-SENTINEL"
    jwt_value = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJhYmNkZWYifQ.c2lnbmF0dXJl"
    try:
        access.info(
            '%(h)s "%(r)s" %(s)s',
            {
                "h": "127.0.0.1",
                "r": f"POST /kling/callback/{token}/?t={jwt_value} HTTP/1.1",
                "s": "200",
            },
        )
    finally:
        access.removeHandler(handler)
    assert captured and "/kling/callback/[redacted]/" in captured[0]
    assert token not in captured[0] and jwt_value not in captured[0]
