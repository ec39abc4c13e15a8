"""What an independent attack got through (issue 17), one class per item of the issue.

1. Account takeover through the logs: production refuses e-mail backends that print or keep
   mail, ``check --deploy`` reports them (``klingweb.E001``), reset and invitation tokens
   are redacted from log lines, resets and invitations are rate-limited per address and per
   client without telling which addresses exist, and ``make run`` creates the demo users
   (and prints their password) in sandbox mode only.
2. Lockouts behind a proxy: the client address comes from ``X-Forwarded-For`` as far as
   ``TRUSTED_PROXY_COUNT`` proxies vouch for it; a (username, IP) pair is locked, never a
   username alone, and an IP spraying many usernames is cooled off.
3. Production mode refuses the console e-mail backend at start-up.
4. Invitations bind to the invited address.
5. The result-fetch guard compares scheme, host and port, on every redirect hop, and
   connects to the address it checked.
6. Only http(s) vendor URLs are stored or rendered.
7. A callback's cost must be a finite, non-negative number of at most 8 decimal places (the ledger's).
8. CSV cells are neutralised after a separator too, not only at their start.
9. A newline in a team name breaks no mail; names refuse control characters.
10. Change-password attempts share the sign-in throttle.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
import socket
import sqlite3
import subprocess
import sys
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from elements_app.forms import ElementForm
from elements_app.models import PresetElement
from klingweb.accounts import services
from klingweb.accounts.forms import TeamForm
from klingweb.accounts.models import Invitation, Membership, Role, Team
from klingweb.backends import client_ip
from klingweb.csv_safe import csv_cell
from klingweb.redaction import RedactingFilter
from klingweb.run import banner, env_build, prepare
from tasks_app.budgets import budget_alerts_check
from tasks_app.callbacks import callback_token_for
from tasks_app.media import media_download, media_for_display, media_keep
from tasks_app.models import Budget, Deduction, Status, Task, TaskMedia
from tests.conftest import PASSWORD, make_user
from tests.jobs_support import CallbackJobs, callback_jobs_for
from tests.test_security_fetch import PNG
from tests.test_security_settings import ROOT, manage, production_env
from tests.test_usage import MARCH, charge, make_task, parse_csv

User = get_user_model()
LOGIN = "/accounts/login/"
HX = {"HTTP_HX_REQUEST": "true"}
#: A URL a browser would run or load inline, in an attribute that takes a URL.
JS_ATTRIBUTE = re.compile(r"""(href|src)\s*=\s*["']?\s*(javascript|data|vbscript):""", re.I)


@pytest.fixture(autouse=True)
def isolated(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.AXES_ENABLED = True
    settings.KLING_WEBHOOK_SECRET = ""
    settings.PUBLIC_BASE_URL = "https://portal.example.com"


def sign_in(client: Client, username: str, password: str, **meta):
    meta.setdefault("REMOTE_ADDR", "10.0.0.1")
    return client.post(LOGIN, {"username": username, "password": password}, **meta)


# --- 1 and 3. E-mail, logs, make run -------------------------------------------------------------


class TestMailAndLogs:
    def test_production_refuses_the_console_email_backend_at_start_up(self, tmp_path):
        env = production_env(tmp_path)
        env.pop("EMAIL_BACKEND", None)  # the default: console
        out = manage(env, "check", "--deploy")
        assert out.returncode != 0
        assert "EMAIL_BACKEND is django.core.mail.backends.console.EmailBackend" in out.stderr
        assert "KLINGWEB_PRODUCTION=1" in out.stderr
        for backend in ("locmem", "filebased", "dummy"):
            env["EMAIL_BACKEND"] = f"django.core.mail.backends.{backend}.EmailBackend"
            assert manage(env, "check").returncode != 0, backend

    def test_check_deploy_reports_the_console_backend_as_an_error(self, settings):
        settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
        with pytest.raises(SystemCheckError, match="klingweb.E001"):
            call_command("check", deploy=True, stdout=io.StringIO(), stderr=io.StringIO())
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
        settings.TRUSTED_PROXY_COUNT = 0
        out, err = io.StringIO(), io.StringIO()
        call_command("check", deploy=True, stdout=out, stderr=err)
        assert "klingweb.E001" not in out.getvalue() + err.getvalue()
        assert (
            "klingweb.W002" in err.getvalue()
        )  # a TLS proxy whose X-Forwarded-For is ignored  # a TLS proxy whose X-Forwarded-For is ignored

    def test_reset_and_invitation_links_never_reach_a_log_line(self, client, portal):
        client.post(reverse("accounts-password-reset"), {"email": "viewer@example.com"})
        reset_path = (
            "/accounts/password/reset/"
            + mail.outbox[-1].body.split("/accounts/password/reset/")[1].split()[0]
        )
        token = reset_path.rstrip("/").rsplit("/", 1)[1]
        _, invite_token = services.invitation_create(
            team=portal.team,
            email="new@example.com",
            role=Role.MEMBER,
            actor=Membership.objects.get(user=portal.owner),
        )
        invite_path = reverse("accounts-invitation-accept", kwargs={"token": invite_token})
        for path, secret in ((reset_path, token), (invite_path, invite_token)):
            # An access-log line as gunicorn and runserver write it (INFO).
            record = logging.LogRecord(
                "gunicorn.access", logging.INFO, __file__, 1, '"GET %s HTTP/1.1" 200', (path,), None
            )
            RedactingFilter().filter(record)
            line = record.getMessage()
            assert secret not in line and "[redacted]" in line

    def test_password_resets_are_limited_per_address(self, client, portal):
        url = reverse("accounts-password-reset")
        for n in range(3):
            response = client.post(url, {"email": "viewer@example.com"}, REMOTE_ADDR=f"10.1.0.{n}")
            assert response.status_code == 302
        refused = client.post(url, {"email": "VIEWER@example.com"}, REMOTE_ADDR="10.1.0.9")
        assert refused.status_code == 429
        assert "Too many password-reset requests" in refused.content.decode()
        assert len(mail.outbox) == 3

    def test_password_resets_are_limited_per_client(self, client, portal, settings):
        url = reverse("accounts-password-reset")
        for n in range(10):
            client.post(url, {"email": f"nobody{n}@example.com"}, REMOTE_ADDR="10.2.0.1")
        assert (
            client.post(url, {"email": "viewer@example.com"}, REMOTE_ADDR="10.2.0.1").status_code
            == 429
        )
        assert mail.outbox == []
        # Another client is not affected.
        assert (
            client.post(url, {"email": "viewer@example.com"}, REMOTE_ADDR="10.2.0.2").status_code
            == 302
        )
        assert len(mail.outbox) == 1

    def test_reset_answers_do_not_tell_whether_an_address_exists(self, portal):
        url = reverse("accounts-password-reset")
        answers = {}
        for email in ("viewer@example.com", "nobody@example.com"):
            seen = []
            for n in range(4):
                response = Client().post(url, {"email": email}, REMOTE_ADDR=f"10.3.0.{n}")
                body = response.content.decode().replace(email, "EMAIL")
                body = re.sub(r'("X-CSRFToken": "|value=")[\w-]{32,}', r"\1TOKEN", body)
                seen.append((response.status_code, response.get("Location"), body))
            answers[email] = seen
        assert answers["viewer@example.com"] == answers["nobody@example.com"]
        assert [s for s, _, _ in answers["nobody@example.com"]] == [302, 302, 302, 429]

    def test_invitations_are_limited_per_address_and_per_client(self, client, portal, settings):
        settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "invitation-client": (4, 3600)}
        client.force_login(portal.owner)
        url = reverse("accounts-invitation-create", kwargs={"team": portal.team.code})
        revoke = Invitation.objects.filter(email__iexact="target@example.com")
        for _ in range(3):  # invite, revoke, invite again: the address is spammed
            response = client.post(url, {"email": "target@example.com", "role": "member"}, **HX)
            assert "Invitation sent" in response.content.decode()
            revoke.update(revoked_at=timezone.now())
        response = client.post(url, {"email": "Target@example.com", "role": "member"}, **HX)
        assert "Too many invitations" in response.content.decode()
        assert len(mail.outbox) == 3
        assert revoke.count() == 3
        response = client.post(url, {"email": "other@example.com", "role": "member"}, **HX)
        assert "Too many invitations" in response.content.decode()  # 5th from this client
        assert not Invitation.objects.filter(email="other@example.com").exists()

    def test_make_run_with_real_credentials_makes_no_demo_users(self, tmp_path):
        """The real start-up steps (``klingweb.run.prepare``) on a fresh SQLite file."""
        base = {
            "PATH": "/usr/bin:/bin",
            "KLING_ACCESS_KEY": "ak-real",
            "KLING_SECRET_KEY": "sk-real",
            "SQLITE_PATH": str(tmp_path / "real.sqlite3"),
            "DJANGO_SETTINGS_MODULE": "tests.e2e.server_settings",
            "KLINGWEB_E2E_STATIC_ROOT": str(tmp_path / "static"),
            "KLINGWEB_E2E_NOMIGRATIONS": "1",
        }
        env, sandbox_mode = env_build(
            base=base, file_vars={"DEMO_PASSWORD": "demo-pass-9876"}, port=8123
        )
        assert not sandbox_mode
        prepare(env=env, quiet=True)
        with sqlite3.connect(tmp_path / "real.sqlite3") as db:
            assert db.execute("select count(*) from auth_user").fetchone() == (0,)
        text = banner(env=env, port=8123, sandbox_mode=False)
        assert "demo-pass-9876" not in text and "studio-owner" not in text
        sandbox_text = banner(
            env={**env, "KLING_API_BASE_URL": "http://127.0.0.1:8700"}, port=8123, sandbox_mode=True
        )
        assert "demo-pass-9876" in sandbox_text
        assert "E-mails (password resets, invitations) are printed in this output" in sandbox_text

    def test_demo_users_left_from_the_sandbox_are_deactivated_with_real_credentials(self, db):
        call_command("demo_data", password="demo-pass-123", verbosity=0)
        call_command("demo_data", deactivate=True, verbosity=0)
        assert not User.objects.filter(username__startswith="studio-", is_active=True).exists()
        assert not Client().login(username="studio-owner", password="demo-pass-123")
        call_command("demo_data", password="demo-pass-123", verbosity=0)  # sandbox again
        assert Client().login(username="studio-owner", password="demo-pass-123")


# --- 2. Lockout behind a proxy ----------------------------------------------------------------


def test_trusted_proxy_count_configures_axes_client_address(tmp_path):
    code = (
        "import klingweb.settings as s; print(s.TRUSTED_PROXY_COUNT, "
        "s.AXES_IPWARE_META_PRECEDENCE_ORDER, s.AXES_IPWARE_PROXY_COUNT, "
        "s.AXES_CLIENT_IP_CALLABLE)"
    )
    env = {**production_env(tmp_path), "KLINGWEB_PRODUCTION": "0", "TRUSTED_PROXY_COUNT": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == [
        "1",
        "('HTTP_X_FORWARDED_FOR',)",
        "0",
        "klingweb.backends.client_ip",
    ], out.stderr
    env["TRUSTED_PROXY_COUNT"] = "-1"
    bad = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert "TRUSTED_PROXY_COUNT must be at least 0" in bad.stderr


class TestLockout:
    @pytest.fixture
    def behind_one_proxy(self, settings):
        """What TRUSTED_PROXY_COUNT=1 sets (the test above): one nginx on 127.0.0.1."""
        settings.AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR",)
        settings.AXES_IPWARE_PROXY_COUNT = 0

    def via_proxy(self, client, username, password, forwarded):
        return sign_in(
            client, username, password, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=forwarded
        )

    def test_an_attacker_behind_the_proxy_cannot_lock_the_victim_out(
        self, portal, behind_one_proxy
    ):
        attacker = Client()
        for _ in range(5):
            self.via_proxy(attacker, "member", "wrong", "203.0.113.9")
        assert self.via_proxy(attacker, "member", PASSWORD, "203.0.113.9").status_code == 429
        # Forging the header does not help: the proxy appends the real address last.
        forged = "198.51.100.7, 203.0.113.9"
        assert self.via_proxy(Client(), "member", PASSWORD, forged).status_code == 429
        victim = self.via_proxy(Client(), "member", PASSWORD, "198.51.100.7")
        assert victim.status_code == 302

    @pytest.mark.parametrize(
        "forwarded,client",
        [
            ("1.2.3.4, 203.0.113.5, 10.0.0.2", "203.0.113.5"),  # a forged entry left of it
            ("203.0.113.5, 10.0.0.2", "203.0.113.5"),
            ("203.0.113.5", "127.0.0.1"),  # too short for two proxies: not vouched for
            (None, "127.0.0.1"),
        ],
    )
    def test_behind_two_proxies_the_entry_the_first_one_appended_is_the_client(
        self, settings, rf, forwarded, client
    ):
        """TRUSTED_PROXY_COUNT=2: the nearest proxy appends the first proxy's address, which
        appended the client's."""
        settings.AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR",)
        settings.AXES_IPWARE_PROXY_COUNT = 1
        meta = {"REMOTE_ADDR": "127.0.0.1"}
        if forwarded:
            meta["HTTP_X_FORWARDED_FOR"] = forwarded
        assert client_ip(rf.post(LOGIN, **meta)) == client

    def test_without_the_header_the_direct_address_counts(self, portal, behind_one_proxy):
        for _ in range(5):
            sign_in(Client(), "member", "wrong", REMOTE_ADDR="10.9.0.1")
        assert sign_in(Client(), "member", PASSWORD, REMOTE_ADDR="10.9.0.1").status_code == 429
        assert self.via_proxy(Client(), "member", PASSWORD, "10.9.0.2").status_code == 302

    def test_no_lock_ever_holds_a_username_alone(self, portal, settings):
        assert all(
            isinstance(p, list) and "ip_address" in p for p in settings.AXES_LOCKOUT_PARAMETERS
        )
        for n in range(12):
            sign_in(Client(), "member", "wrong", REMOTE_ADDR=f"10.4.0.{n}")
        assert sign_in(Client(), "member", PASSWORD, REMOTE_ADDR="10.4.1.1").status_code == 302

    def test_an_ip_spraying_many_usernames_is_cooled_off(self, portal, settings):
        settings.AXES_IP_FAILURE_LIMIT = 8
        statuses = [
            sign_in(Client(), name, "wrong", REMOTE_ADDR="10.5.0.1").status_code
            for name in ("owner", "admin", "member", "viewer")
            for _ in range(2)  # below the per-pair limit of 5
        ]
        assert statuses == [200] * 7 + [429]  # the 8th failure of the IP answers the lockout
        page = sign_in(Client(), "outsider", PASSWORD, REMOTE_ADDR="10.5.0.1")
        assert page.status_code == 429
        assert "Too many sign-in attempts" in page.content.decode()
        assert sign_in(Client(), "outsider", PASSWORD, REMOTE_ADDR="10.5.0.2").status_code == 302


# --- 4. Invitations bind to the invited address -------------------------------------------------


class TestInvitationBinding:
    @pytest.fixture
    def invitation(self, portal):
        return services.invitation_create(
            team=portal.team,
            email="New.Person@example.com",
            role=Role.ADMIN,
            actor=Membership.objects.get(user=portal.owner),
        )

    def test_a_signed_in_user_with_another_address_cannot_accept(self, client, portal, invitation):
        row, token = invitation
        path = reverse("accounts-invitation-accept", kwargs={"token": token})
        client.force_login(portal.outsider)
        page = client.get(path).content.decode()
        assert "This invitation is for New.Person@example.com" in page
        assert "Accept as outsider" not in page
        response = client.post(path)
        assert response.status_code == 200
        assert "with another e-mail address" in response.content.decode()
        assert not Membership.objects.filter(team=portal.team, user=portal.outsider).exists()
        row.refresh_from_db()
        assert row.is_pending

    def test_the_invited_address_accepts_in_any_case(self, client, portal, invitation):
        _, token = invitation
        person = make_user("person")
        person.email = "new.person@EXAMPLE.com"
        person.save()
        client.force_login(person)
        path = reverse("accounts-invitation-accept", kwargs={"token": token})
        assert "Accept as person" in client.get(path).content.decode()
        response = client.post(path)
        assert response["Location"] == reverse("tasks-list", kwargs={"team": portal.team.code})
        assert Membership.objects.get(team=portal.team, user=person).role == Role.ADMIN


# --- 5. Fetch guard: scheme, host and port; every hop; one resolution ----------------------------


class Origin(BaseHTTPRequestHandler):
    """A loopback origin: ``/ok.png``, ``/to?<url>`` (302 to it); records what it served."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Host")))
        if self.path.startswith("/ok.png"):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
        elif self.path.startswith("/to?"):
            self.send_response(302)
            self.send_header("Location", self.path[4:])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture
def two_origins():
    servers = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
        server.daemon_threads = True
        server.seen = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [(f"http://127.0.0.1:{s.server_address[1]}", s.seen) for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def result_task(portal, url: str) -> Task:
    return Task.objects.create(
        team=portal.team,
        family="multi_shot",
        status=Status.SUCCEED,
        finished_at=timezone.now(),
        result={"images": [{"index": 0, "url_1": url}]},
    )


class TestFetchGuard:
    def test_another_port_of_the_kling_host_is_not_trusted(self, portal, settings, two_origins):
        (kling, kling_seen), (other, other_seen) = two_origins
        settings.KLING_API_BASE_URL = kling
        task = result_task(portal, other + "/ok.png")
        assert media_keep(task_pk=task.pk).kept == 0
        assert other_seen == []
        assert "non-public address" in TaskMedia.objects.get(task=task).last_error
        # The Kling origin itself is still fetched (the sandbox case).
        assert media_keep(task_pk=result_task(portal, kling + "/ok.png").pk).kept == 1

    def test_another_scheme_of_the_kling_host_is_not_trusted(self, portal, settings, two_origins):
        (kling, kling_seen), _ = two_origins
        settings.KLING_API_BASE_URL = kling.replace("http://", "https://")
        task = result_task(portal, kling + "/ok.png")
        assert media_keep(task_pk=task.pk).kept == 0
        assert kling_seen == []

    def test_a_redirect_to_another_port_is_checked_again(self, portal, settings, two_origins):
        (kling, kling_seen), (other, other_seen) = two_origins
        settings.KLING_API_BASE_URL = kling
        task = result_task(portal, f"{kling}/to?{other}/ok.png")
        assert media_keep(task_pk=task.pk).kept == 0
        assert [p for p, _ in kling_seen] == [f"/to?{other}/ok.png"]
        assert other_seen == []

    def test_the_operators_allow_list_is_trusted_on_its_own_port_only(
        self, portal, settings, two_origins
    ):
        (kling, kling_seen), (custom, custom_seen) = two_origins
        settings.KLING_API_BASE_URL = "https://api-singapore.klingai.com"
        settings.KLING_CUSTOM_BASE_URLS = [custom]
        assert media_keep(task_pk=result_task(portal, custom + "/ok.png").pk).kept == 1
        assert media_keep(task_pk=result_task(portal, kling + "/ok.png").pk).kept == 0
        assert kling_seen == []

    def test_the_name_is_resolved_once_and_that_address_is_used(self, monkeypatch, two_origins):
        """DNS rebinding: the name answers loopback when checked and an unreachable address
        afterwards. The download must use the first answer (one lookup), keeping the name
        in the ``Host`` header. The stub stands in for DNS, not for the code under test."""
        (kling, kling_seen), _ = two_origins
        port = int(kling.rsplit(":", 1)[1])
        real = socket.getaddrinfo
        answers = []

        def rebinding(host, *args, **kwargs):
            if host == "cdn.rebind.test":
                answers.append(host)
                address = "127.0.0.1" if len(answers) == 1 else "10.255.255.1"
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        url = f"http://cdn.rebind.test:{port}/ok.png"
        trusted = frozenset({("http", "cdn.rebind.test", port)})
        tmp, content_type, size = media_download(url=url, kind="image", trusted_origins=trusted)
        tmp.close()
        assert (content_type, size) == ("image/png", len(PNG))
        assert answers == ["cdn.rebind.test"]
        assert kling_seen == [("/ok.png", f"cdn.rebind.test:{port}")]


# --- 6. Only http(s) vendor URLs ------------------------------------------------------------------


@pytest.fixture
def callback_jobs(monkeypatch, django_capture_on_commit_callbacks, kling_settings) -> CallbackJobs:
    """Callbacks with the confirming query run at once (``CallbackJobs``). Kling is the
    sandbox, which does not know ``kt-17``: a final callback is applied as it came."""
    return callback_jobs_for(monkeypatch, django_capture_on_commit_callbacks)


def _callback(client, task: Task, data: dict, jobs: CallbackJobs | None = None):
    path = reverse("tasks-callback", kwargs={"token": callback_token_for(task)})
    if jobs is not None:
        return jobs.post(client, path, data)
    return client.post(path, data=json.dumps(data), content_type="application/json")


def _submitted(portal, family="text2video") -> Task:
    return Task.objects.create(
        team=portal.team,
        creator=portal.member,
        family=family,
        status=Status.SUBMITTED,
        task_id="kt-17",
        model_name="kling-v1-6",
        mode="std",
        submitted_at=timezone.now(),
    )


class TestVendorUrls:
    def test_non_http_result_urls_are_dropped_and_logged(
        self, client, portal, caplog, callback_jobs
    ):
        task = _submitted(portal)
        body = {
            "task_id": "kt-17",
            "task_status": "succeed",
            "final_unit_deduction": "10",
            "task_info": {"external_task_id": str(task.code)},
            "task_result": {
                "videos": [
                    {"id": "v1", "url": "javascript:alert(document.cookie)", "duration": "5"},
                    {"id": "v2", "url": "https://cdn.example/v2.mp4", "watermark_url": "data:x"},
                ]
            },
        }
        with caplog.at_level(logging.WARNING):
            assert _callback(client, task, body, callback_jobs).status_code == 200
        task.refresh_from_db()
        assert task.status == Status.SUCCEED
        stored = json.dumps(task.result)
        assert "javascript:" not in stored and "data:" not in stored
        assert "https://cdn.example/v2.mp4" in stored
        assert "dropped a vendor URL that is not http(s)" in caplog.text
        client.force_login(portal.member)
        page = client.get(
            reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
        )
        assert not JS_ATTRIBUTE.search(page.content.decode())

    def test_a_stored_non_http_result_is_never_rendered(self, client, portal):
        task = result_task(portal, "javascript:alert(1)")
        assert [item.url for item in media_for_display(task)] == [None]
        client.force_login(portal.member)
        page = client.get(
            reverse("tasks-detail", kwargs={"team": portal.team.code, "code": task.code})
        )
        assert not JS_ATTRIBUTE.search(page.content.decode())

    def test_element_voice_and_image_urls_must_be_http(self, db):
        preset = PresetElement(element_id="e-17")
        preset.vendor_apply(
            {
                "element_id": "e-17",
                "element_name": "Sly",
                "element_image_list": {"frontal_image": "javascript:alert(1)"},
                "element_voice_info": {"voice_id": "v", "trial_url": "javascript:alert(2)"},
            }
        )
        assert preset.voice_trial_url == ""
        assert "javascript:" not in json.dumps(preset.element_image_list)
        assert "javascript:" not in json.dumps(preset.raw)


# --- 7. Costs -----------------------------------------------------------------------------------


class TestCosts:
    @pytest.mark.parametrize(
        "units",
        [
            "NaN",
            "nan",
            "Infinity",
            "-Infinity",
            "sNaN",
            "-1",
            "1.000000001",
            "ten",
            "1e400",
            True,
            [1],
        ],
    )
    def test_an_implausible_cost_is_400_and_changes_nothing(self, client, portal, units):
        task = _submitted(portal)
        body = {
            "task_id": "kt-17",
            "task_status": "succeed",
            "final_unit_deduction": units,
            "task_info": {"external_task_id": str(task.code)},
            "task_result": {"videos": [{"id": "v", "url": "https://cdn.example/v.mp4"}]},
        }
        response = _callback(client, task, body)
        assert response.status_code == 400
        assert "final_unit_deduction" in response.json()["error"]
        task.refresh_from_db()
        assert (task.status, task.final_unit_deduction, task.result) == (Status.SUBMITTED, None, {})
        assert not Deduction.objects.filter(task=task).exists()

    @pytest.mark.parametrize(
        "units,expected", [("12.5", "12.500"), ("0", "0.000"), (7, "7.000"), ("3.250", "3.250")]
    )
    def test_a_plausible_cost_is_charged(self, client, portal, units, expected, callback_jobs):
        task = _submitted(portal)
        body = {
            "task_id": "kt-17",
            "task_status": "succeed",
            "final_unit_deduction": units,
            "task_info": {"external_task_id": str(task.code)},
        }
        assert _callback(client, task, body, callback_jobs).status_code == 200
        assert Deduction.objects.get(task=task).units == Decimal(expected)


# --- 8. CSV ----------------------------------------------------------------------------------------


class TestCsv:
    @pytest.mark.parametrize(
        "text,safe",
        [
            ("Ops;=1+2;x", "Ops;'=1+2;x"),
            ("a,@SUM(A1)", "a,'@SUM(A1)"),
            ("a|+1", "a|'+1"),
            ("a\t-1", "a\t'-1"),
            ("a\n=1", "a\n'=1"),
            ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
            ("\t=1", "'\t'=1"),
            ("Ops; =1", "Ops; '=1"),
            ("plain - text", "plain - text"),
            ("-2.000", "-2.000"),
        ],
    )
    def test_cells_are_neutralised_at_the_start_and_after_separators(self, text, safe):
        assert csv_cell(text) == safe

    def test_a_team_name_with_a_formula_after_a_semicolon_is_neutralised(self, client, portal):
        Team.objects.filter(pk=portal.team.pk).update(name="Ops;=1+2;x")
        charge(
            make_task(portal.team, portal.member, at=dt.datetime(2025, 3, 5, tzinfo=dt.UTC)), "2"
        )
        client.force_login(portal.owner)
        url = reverse("usage-team-export", kwargs={"team": portal.team.code, "table": "ledger"})
        response = client.get(url, MARCH)
        rows = parse_csv(response)
        assert rows[1][1] == "Ops;'=1+2;x"
        # Split the way a semicolon-locale spreadsheet would: no cell starts a formula.
        text = b"".join(response.streaming_content).decode() if response.streaming else ""
        for line in csv.reader(
            io.StringIO(text or "\n".join(",".join(r) for r in rows)), delimiter=";"
        ):
            assert not any(cell.startswith(("=", "+", "@")) for cell in line)


# --- 9. Control characters in names; mail subjects ---------------------------------------------


class TestNamesAndMail:
    @pytest.mark.parametrize(
        "name", ["Ops\nBcc: x@example.com", "Ops\rTeam", "Ops\tTeam", "Ops\u2028Team", "Ops\x00"]
    )
    def test_team_names_refuse_control_characters(self, client, portal, name):
        assert not TeamForm({"name": name, "time_zone": "UTC"}).is_valid()
        client.force_login(portal.owner)
        url = reverse("accounts-team-update", kwargs={"team": portal.team.code})
        html = client.post(url, {"name": name, "time_zone": "UTC"}, **HX).content.decode()
        # NUL has Django's own message ("Null characters are not allowed.").
        assert "control characters" in html or "Null characters" in html
        portal.team.refresh_from_db()
        assert portal.team.name == "Blue team"

    def test_element_names_refuse_control_characters(self, portal):
        form = ElementForm(
            {"name": "Sly\nFox", "description": "d", "reference_type": "image_refer"},
            team=portal.team,
        )
        form.is_valid()
        assert "no line breaks, tabs or other control characters" in str(form.errors.get("name"))

    def test_inviting_to_a_team_whose_name_holds_a_newline_sends_the_mail(self, client, portal):
        Team.objects.filter(pk=portal.team.pk).update(name="Blue\nBcc: evil@example.com")
        client.force_login(portal.owner)
        url = reverse("accounts-invitation-create", kwargs={"team": portal.team.code})
        response = client.post(url, {"email": "fresh@example.com", "role": "member"}, **HX)
        assert response.status_code == 200
        assert "Invitation sent to fresh@example.com" in response.content.decode()
        (message,) = mail.outbox
        assert "\n" not in message.subject and "Blue Bcc: evil@example.com" in message.subject
        assert message.recipients() == ["fresh@example.com"]

    def test_budget_alerts_of_such_a_team_are_mailed(self, portal):
        Team.objects.filter(pk=portal.team.pk).update(name="Blue\r\nteam")
        Budget.objects.create(team=portal.team, period="monthly", units=Decimal("100"))
        task = Task.objects.create(team=portal.team, family="text2video", status=Status.SUCCEED)
        Deduction.objects.create(
            team=portal.team,
            task=task,
            family="text2video",
            units=Decimal("85"),
            recorded_at=timezone.now(),
        )
        assert [a.threshold for a in budget_alerts_check(team_pk=portal.team.pk)] == [80]
        (message,) = mail.outbox
        assert "Blue team" in message.subject and "\n" not in message.subject


# --- 10. Change password shares the sign-in throttle --------------------------------------------


class TestPasswordChange:
    def change(self, client, old, ip="10.6.0.1"):
        new = "another-long-passphrase-77"
        return client.post(
            reverse("accounts-password-change"),
            {"old_password": old, "new_password1": new, "new_password2": new},
            REMOTE_ADDR=ip,
        )

    def test_wrong_old_passwords_lock_the_user_and_ip_out(self, portal):
        thief = Client()
        thief.force_login(portal.member)
        for _ in range(4):
            response = self.change(thief, "guess")
            assert response.status_code == 200
            assert "Your old password was entered incorrectly" in response.content.decode()
        assert self.change(thief, "guess").status_code == 429
        locked = self.change(thief, PASSWORD)
        assert locked.status_code == 429
        assert "Too many sign-in attempts" in locked.content.decode()
        portal.member.refresh_from_db()
        assert portal.member.check_password(PASSWORD)
        # The same throttle as signing in: that pair is locked there too...
        assert sign_in(Client(), "member", PASSWORD, REMOTE_ADDR="10.6.0.1").status_code == 429
        # ...but not the person from elsewhere.
        assert sign_in(Client(), "member", PASSWORD, REMOTE_ADDR="10.6.0.2").status_code == 302

    def test_failed_sign_ins_count_for_the_change_form(self, portal):
        for _ in range(5):
            sign_in(Client(), "member", "wrong", REMOTE_ADDR="10.7.0.1")
        client = Client()
        client.force_login(portal.member)
        assert self.change(client, PASSWORD, ip="10.7.0.1").status_code == 429
        assert self.change(client, PASSWORD, ip="10.7.0.2").status_code == 302
