"""`make run`'s start-up pieces: the .env file, the mode switch, and the demo company."""

from __future__ import annotations

import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from klingweb.accounts.models import Membership, Team
from klingweb.run import (
    SANDBOX_ACCESS_KEY,
    env_build,
    env_file_ensure,
    env_file_parse,
    processes_for,
)


def test_env_file_is_written_once_private_and_kept(tmp_path):
    path = tmp_path / ".env"
    first = env_file_ensure(path)
    assert set(first) == {"SECRET_KEY", "FERNET_KEYS", "DEMO_PASSWORD"}
    assert len(first["SECRET_KEY"]) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert env_file_ensure(path) == first
    assert env_file_parse(path.read_text()) == first


def test_env_file_gains_a_missing_variable_without_changing_the_others(tmp_path):
    path = tmp_path / ".env"
    path.write_text("SECRET_KEY=keep-me\nKLING_ACCESS_KEY=ak-real")
    values = env_file_ensure(path)
    assert values["SECRET_KEY"] == "keep-me"
    assert values["KLING_ACCESS_KEY"] == "ak-real"
    assert {"FERNET_KEYS", "DEMO_PASSWORD"} <= set(values)
    assert env_file_parse(path.read_text()) == values


def test_without_kling_keys_the_portal_runs_against_the_sandbox():
    env, sandbox = env_build(base={"PATH": "/bin"}, file_vars={}, port=8001, sandbox_port=8701)
    assert sandbox
    assert env["KLING_API_BASE_URL"] == "http://127.0.0.1:8701"
    assert env["KLING_ACCESS_KEY"] == SANDBOX_ACCESS_KEY
    assert env["KLING_SANDBOX_MODE"] == "1"
    assert env["PUBLIC_BASE_URL"] == "http://127.0.0.1:8001"
    assert env["SECURE_COOKIES"] == "0"  # plain http: Secure cookies would never come back
    assert env["PORT"] == "8001"
    assert processes_for(sandbox_mode=sandbox) == ["web", "worker", "poller", "sandbox"]


def test_real_kling_keys_start_no_sandbox_and_the_environment_wins_over_env_file():
    env, sandbox = env_build(
        base={"KLING_ACCESS_KEY": "ak-env", "KLING_SECRET_KEY": "sk-env", "SECRET_KEY": "env"},
        file_vars={"KLING_ACCESS_KEY": "ak-file", "SECRET_KEY": "file"},
        port=8000,
    )
    assert not sandbox
    assert env["KLING_ACCESS_KEY"] == "ak-env"
    assert env["SECRET_KEY"] == "env"
    assert "KLING_SANDBOX_MODE" not in env
    assert "PUBLIC_BASE_URL" not in env  # Kling cannot reach 127.0.0.1: polling only
    assert processes_for(sandbox_mode=sandbox) == ["web", "worker", "poller"]


@pytest.mark.django_db
def test_demo_data_creates_the_company_once(capsys):
    call_command("demo_data", password="demo-pass-123")
    out = capsys.readouterr().out
    assert "studio-member" in out and "demo-pass-123" in out
    call_command("demo_data", password="demo-pass-123")
    assert "nothing changed" in capsys.readouterr().out

    assert sorted(Team.objects.values_list("name", flat=True)) == ["Acme Marketing", "Acme Studio"]
    roles = {
        (m.user.username, m.team.name, m.role)
        for m in Membership.objects.select_related("user", "team")
    }
    assert roles == {
        ("studio-owner", "Acme Studio", "owner"),
        ("studio-member", "Acme Studio", "member"),
        ("studio-viewer", "Acme Studio", "viewer"),
        ("marketing-owner", "Acme Marketing", "owner"),
    }
    member = get_user_model().objects.get(username="studio-member")
    assert member.check_password("demo-pass-123") and not member.is_staff
    assert get_user_model().objects.get(username="studio-owner").is_superuser


@pytest.mark.django_db
def test_demo_data_never_changes_an_existing_password(capsys):
    call_command("demo_data", password="first-pass-123")
    call_command("demo_data", password="other-pass-456")
    assert "keep the password they were created with" in capsys.readouterr().out
    assert get_user_model().objects.get(username="studio-viewer").check_password("first-pass-123")
