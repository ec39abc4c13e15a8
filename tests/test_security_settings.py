"""Sign-in throttling, password rules, cookies, security headers, CSP, production settings.

- django-axes: 5 wrong passwords for one username from one IP lock that pair out for 15
  minutes with a clear 429 page (the right password too); another IP or another username is
  not affected; the lock ends after the cool-off; the admin's sign-in is throttled too;
  ``Client.login`` (no request) still works.
- Password validators refuse weak passwords where people choose them.
- Every page carries X-Frame-Options, nosniff, Referrer-Policy, COOP and Permissions-Policy;
  no template or rendered page has inline script, inline event handlers, ``style=`` or
  ``javascript:`` URLs (so the CSP holds; the browser tests fail on anything Chromium
  refuses under it), and htmx's injected indicator style is off.
- Under production settings cookies are Secure/HttpOnly/SameSite, plain http redirects to
  https, and ``manage.py check --deploy --fail-level WARNING`` is clean (a subprocess with
  ``KLINGWEB_PRODUCTION=1``); production refuses DEBUG and a missing SECRET_KEY.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from cryptography.fernet import Fernet
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.conftest import PASSWORD
from tests.test_security_access import HTMX, own_url, routes
from tests.test_security_access import world as _world_fixture

ROOT = Path(__file__).resolve().parent.parent
world = _world_fixture  # the access suite's fixture: both teams' objects
LOGIN = "/accounts/login/"


def sign_in(client: Client, username: str, password: str, ip: str = "10.0.0.1"):
    return client.post(
        LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip, follow=False
    )


# --- django-axes --------------------------------------------------------------------------------


class TestThrottling:
    @pytest.fixture(autouse=True)
    def axes_on(self, settings):
        settings.AXES_ENABLED = True

    def test_five_failures_lock_the_username_and_ip_out(self, portal):
        client = Client()
        for _ in range(5):
            response = sign_in(client, "member", "wrong-password")
            assert response.status_code in (200, 429)
        locked = sign_in(client, "member", PASSWORD)
        assert locked.status_code == 429
        page = locked.content.decode()
        assert "Too many sign-in attempts" in page
        assert "15 minutes" in page
        assert "_auth_user_id" not in client.session
        # The fifth failure itself already answers with the lockout page.
        assert sign_in(client, "member", "wrong-password").status_code == 429

    def test_other_ip_and_other_username_are_not_locked(self, portal):
        client = Client()
        for _ in range(5):
            sign_in(client, "member", "wrong-password", ip="10.0.0.1")
        assert sign_in(Client(), "member", PASSWORD, ip="10.0.0.2").status_code == 302
        assert sign_in(Client(), "viewer", PASSWORD, ip="10.0.0.1").status_code == 302

    def test_the_lock_ends_after_the_cool_off(self, portal):
        client = Client()
        for _ in range(5):
            sign_in(client, "member", "wrong-password")
        assert sign_in(client, "member", PASSWORD).status_code == 429
        AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
        assert sign_in(Client(), "member", PASSWORD).status_code == 302

    def test_a_success_resets_the_count(self, portal):
        client = Client()
        for _ in range(4):
            sign_in(client, "member", "wrong-password")
        assert sign_in(Client(), "member", PASSWORD).status_code == 302
        for _ in range(4):
            assert sign_in(Client(), "member", "wrong-password").status_code == 200

    def test_admin_sign_in_is_throttled_too(self, portal):
        portal.owner.is_staff = True
        portal.owner.save()
        client = Client()
        url = reverse("admin:login")
        for _ in range(5):
            client.post(url, {"username": "owner", "password": "nope"}, REMOTE_ADDR="10.9.9.9")
        response = client.post(
            url, {"username": "owner", "password": PASSWORD}, REMOTE_ADDR="10.9.9.9"
        )
        assert response.status_code == 429

    def test_client_login_still_works(self, portal):
        client = Client()
        assert client.login(username="member", password=PASSWORD)
        assert not client.login(username="member", password="wrong")

    def test_settings_are_as_documented(self, settings):
        assert settings.AUTHENTICATION_BACKENDS[0] == "klingweb.backends.RequestAxesBackend"
        assert settings.MIDDLEWARE[-1] == "axes.middleware.AxesMiddleware"
        assert settings.AXES_FAILURE_LIMIT == 5
        assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60
        assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]


# --- Passwords ----------------------------------------------------------------------------------


@pytest.mark.parametrize("weak", ["short1", "password123", "12345678901"])
def test_weak_passwords_are_refused(portal, weak):
    with pytest.raises(ValidationError):
        validate_password(weak, user=portal.member)


def test_password_change_form_refuses_a_weak_password(portal):
    client = Client()
    client.force_login(portal.member)
    response = client.post(
        reverse("accounts-password-change"),
        {"old_password": PASSWORD, "new_password1": "password", "new_password2": "password"},
    )
    assert response.status_code == 200
    assert "too common" in response.content.decode()


# --- Headers and CSP ----------------------------------------------------------------------------


def test_every_page_has_the_security_headers(portal):
    """The headers a browser acts on besides the CSP. The CSP itself is checked where it acts:
    the browser tests fail on anything Chromium refuses under it (tests/e2e/conftest.py),
    and the tests below keep inline code, which it would refuse, out of every page."""
    client = Client()
    client.force_login(portal.owner)
    for url in (
        reverse("tasks-list", kwargs={"team": portal.team.code}),
        reverse("accounts-settings", kwargs={"team": portal.team.code}),
        LOGIN,
    ):
        response = (Client() if url == LOGIN else client).get(url)
        assert response.status_code == 200
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"
        assert "camera=()" in response["Permissions-Policy"]


def test_csp_allows_the_sandbox_media_origin_when_it_is_plain_http():
    """Results are shown from the vendor's URL until kept: the sandbox is http://."""
    out = subprocess.run(
        [sys.executable, "-c", "import klingweb.settings as s; print(s.CONTENT_SECURITY_POLICY)"],
        cwd=ROOT,
        env={**_clean_env(), "KLING_API_BASE_URL": "http://127.0.0.1:8700"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "http://127.0.0.1:8700" in out.stdout, out.stderr


class InlineCode(HTMLParser):
    """Finds what a ``script-src 'self'; style-src 'self'`` policy would block."""

    def __init__(self):
        super().__init__()
        self.problems: list[str] = []
        self._script: str | None = None

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…> (inline event handler)")
            if name == "style":
                self.problems.append(f"<{tag} style=…> (inline style)")
            if name in ("href", "src", "action", "formaction") and (
                value or ""
            ).strip().lower().startswith("javascript:"):
                self.problems.append(f"<{tag} {name}=javascript:…>")
            if name.startswith("hx-on"):
                self.problems.append(f"<{tag} {name}=…> (htmx inline handler)")
        if tag == "script":
            inert = (values.get("type") or "").lower() in ("application/json", "text/template")
            self._script = None if (values.get("src") or inert) else ""
        if tag == "style":
            self.problems.append("<style> element (inline style)")

    def handle_data(self, data):
        if self._script is not None:
            self._script += data

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.problems.append(f"inline <script>{self._script.strip()[:40]}…")
            self._script = None


def test_templates_have_no_inline_code():
    problems = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        source = path.read_text()
        # Template tags are not HTML: blank them so the parser sees the markup.
        markup = re.sub(r"{#.*?#}|{%.*?%}|{{.*?}}", "x", source, flags=re.S)
        parser = InlineCode()
        parser.feed(markup)
        problems += [f"{path.relative_to(ROOT)}: {p}" for p in parser.problems]
    assert not problems, "\n".join(problems)


def test_rendered_pages_have_no_inline_code(world, settings):
    settings.AXES_ENABLED = False
    client = Client(raise_request_exception=False)
    client.force_login(world.portal.owner)
    problems, pages = [], 0
    for route in routes():
        url = own_url(route, world)
        for extra in ({}, HTMX):
            response = client.get(url, **extra)
            if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
                continue
            pages += 1
            parser = InlineCode()
            parser.feed(response.content.decode())
            problems += [f"{url} [{route.name}]: {p}" for p in parser.problems]
    assert pages >= 30
    assert not problems, "\n".join(sorted(set(problems)))


def test_htmx_does_not_inject_its_indicator_style(portal):
    client = Client()
    client.force_login(portal.owner)
    page = client.get(reverse("tasks-list", kwargs={"team": portal.team.code})).content.decode()
    import json
    import re

    config = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", page)
    assert config is not None
    assert json.loads(config.group(1))["includeIndicatorStyles"] is False
    css = (ROOT / "static/css/app.css").read_text()
    assert ".htmx-indicator" in css


# --- Production settings ----------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    drop = {
        "DATABASE_URL",
        "REDIS_URL",
        "DEBUG",
        "SECRET_KEY",
        "KLINGWEB_PRODUCTION",
        "SECURE_COOKIES",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "PUBLIC_BASE_URL",
        "KLING_API_BASE_URL",
        "EMAIL_BACKEND",
        "TRUSTED_PROXY_COUNT",
    }
    return {k: v for k, v in os.environ.items() if k not in drop}


def production_env(tmp_path, **extra) -> dict[str, str]:
    return {
        **_clean_env(),
        "KLINGWEB_PRODUCTION": "1",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FERNET_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "portal.example.com",
        "PUBLIC_BASE_URL": "https://portal.example.com",
        "SQLITE_PATH": str(tmp_path / "prod.sqlite3"),
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        **extra,
    }


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_production(tmp_path):
    out = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "System check identified no issues" in out.stdout, out.stdout + out.stderr


def test_check_deploy_is_clean_behind_a_tls_proxy(tmp_path):
    env = production_env(tmp_path, BEHIND_TLS_PROXY="1", TRUSTED_PROXY_COUNT="1")
    out = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert out.returncode == 0, out.stdout + out.stderr


def test_check_deploy_flags_the_development_settings(tmp_path):
    """Not vacuous: the same check fails on the development defaults."""
    env = {**_clean_env(), "SQLITE_PATH": str(tmp_path / "dev.sqlite3")}
    out = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert out.returncode != 0
    assert "security.W004" in out.stderr + out.stdout


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"DEBUG": "1"}, "DEBUG must be off in production"),
        ({"SECRET_KEY": ""}, "SECRET_KEY must be set in production"),
        ({"FERNET_KEYS": ""}, "FERNET_KEYS must be set in production"),
    ],
)
def test_production_refuses_unsafe_settings(tmp_path, extra, message):
    out = manage(production_env(tmp_path, **extra), "check")
    assert out.returncode != 0
    assert message in out.stderr


def test_production_values(tmp_path):
    code = (
        "import klingweb.settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS >= 31536000, "
        "s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.DEBUG, s.SESSION_COOKIE_HTTPONLY, "
        "s.CSRF_COOKIE_HTTPONLY, getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=production_env(tmp_path, BEHIND_TLS_PROXY="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.split() == [
        "True",
        "True",
        "True",
        "True",
        "True",
        "False",
        "True",
        "True",
        "('HTTP_X_FORWARDED_PROTO',",
        "'https')",
    ], out.stderr


def test_cookies_and_redirect_under_production_settings(portal, settings):
    settings.AXES_ENABLED = False
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get(LOGIN).status_code == 301  # plain http → https
    page = client.get(LOGIN, secure=True)
    csrf = page.cookies["csrftoken"]
    assert csrf["secure"] and csrf["httponly"] and csrf["samesite"] == "Lax"
    response = client.post(LOGIN, {"username": "member", "password": PASSWORD}, secure=True)
    assert response.status_code == 302
    session = response.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"
