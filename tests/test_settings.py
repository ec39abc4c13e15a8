"""Settings read the environment and fail clearly on bad values (issue 2 §1)."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from klingweb import env

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False), ("", False)],
)
def test_env_bool_accepts_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("KW_FLAG", raw)
    assert env.env_bool("KW_FLAG") is expected


def test_env_bool_rejects_other_values_naming_the_variable(monkeypatch):
    monkeypatch.setenv("KW_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="KW_FLAG"):
        env.env_bool("KW_FLAG")


def test_env_int_checks_number_and_minimum(monkeypatch):
    monkeypatch.setenv("KW_N", "abc")
    with pytest.raises(ImproperlyConfigured, match="whole number"):
        env.env_int("KW_N", 1)
    monkeypatch.setenv("KW_N", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env.env_int("KW_N", 1, minimum=1)
    monkeypatch.setenv("KW_N", "7")
    assert env.env_int("KW_N", 1, minimum=1) == 7


def test_env_decimal_and_list(monkeypatch):
    monkeypatch.setenv("KW_D", "1.25")
    assert env.env_decimal("KW_D", "1") == Decimal("1.25")
    monkeypatch.setenv("KW_D", "one")
    with pytest.raises(ImproperlyConfigured):
        env.env_decimal("KW_D", "1")
    monkeypatch.setenv("KW_L", " a, ,b ")
    assert env.env_list("KW_L") == ["a", "b"]


def test_env_url_requires_scheme_and_host(monkeypatch):
    monkeypatch.setenv("KW_URL", "api.example.com")
    with pytest.raises(ImproperlyConfigured, match="KW_URL"):
        env.env_url("KW_URL")
    monkeypatch.setenv("KW_URL", "https://api.example.com/")
    assert env.env_url("KW_URL") == "https://api.example.com"


def _settings_in_subprocess(extra_env: dict[str, str], expr: str) -> subprocess.CompletedProcess:
    """Import settings in a fresh interpreter with ``extra_env`` and print ``expr``."""
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environ.update(extra_env)
    code = f"import klingweb.settings as s; print({expr})"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_embedded_default_is_sqlite_and_orm_broker():
    out = _settings_in_subprocess(
        {}, "s.DATABASES['default']['ENGINE'], s.Q_CLUSTER.get('orm'), 'redis' in s.Q_CLUSTER"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "django.db.backends.sqlite3 default False"


def test_database_url_selects_postgresql_and_redis_url_the_redis_broker():
    out = _settings_in_subprocess(
        {
            "DATABASE_URL": "postgres://u@127.0.0.1:5432/klingweb",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
        },
        "s.DATABASES['default']['ENGINE'], s.Q_CLUSTER.get('redis'), 'orm' in s.Q_CLUSTER",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("django.db.backends.postgresql redis://127.0.0.1:6379/0 False")


def test_cluster_retry_is_longer_than_timeout():
    out = _settings_in_subprocess(
        {"Q_TIMEOUT": "100"}, "s.Q_CLUSTER['retry'] > s.Q_CLUSTER['timeout']"
    )
    assert out.stdout.strip() == "True", out.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"DEBUG": "perhaps"}, "DEBUG must be true or false"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must be a URL"),
        ({"KLING_API_BASE_URL": "ftp://x"}, "KLING_API_BASE_URL must be a URL"),
        ({"KLING_ACCESS_KEY": "only-half"}, "Set both KLING_ACCESS_KEY and KLING_SECRET_KEY"),
        ({"Q_WORKERS": "0"}, "Q_WORKERS must be at least 1"),
    ],
)
def test_bad_values_fail_at_start_with_a_clear_message(extra, message):
    out = _settings_in_subprocess(extra, "'loaded'")
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr
    assert message in out.stderr


def test_migrations_match_the_models():
    """Every model change has its migration (the suite runs on the migrations)."""
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    out = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_test_stores_files_in_a_temporary_media_root(tmp_path):
    """tests/conftest.py gives each test its own MEDIA_ROOT: a file saved the way uploads
    are saved lands under the test's tmp_path, and the repository's media/ stays untouched."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    repo_media = ROOT / "media"
    before = sorted(repo_media.rglob("*")) if repo_media.exists() else []
    name = default_storage.save("uploads/probe/probe.png", ContentFile(b"\x89PNG probe"))
    stored = Path(default_storage.path(name))
    assert stored.is_file()
    assert stored.resolve().is_relative_to((tmp_path / "media").resolve())
    after = sorted(repo_media.rglob("*")) if repo_media.exists() else []
    assert after == before


def _readme_default(variable: str) -> str:
    """The default the README's configuration table gives for ``variable``."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith(f"| `{variable}` |"):
            return line.split("|")[2].strip().strip("`")
    raise AssertionError(f"{variable} is not in README.md's configuration table")


def test_cluster_workers_default_is_the_readmes_and_q_workers_sets_it():
    """The cluster runs as many workers as README.md says by default, and Q_WORKERS wins."""
    environ = {k: v for k, v in os.environ.items() if k != "Q_WORKERS"}
    code = "import klingweb.settings as s; print(s.Q_CLUSTER['workers'])"
    default = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert default.stdout.strip() == _readme_default("Q_WORKERS"), default.stderr
    five = _settings_in_subprocess({"Q_WORKERS": "5"}, "s.Q_CLUSTER['workers']")
    assert five.stdout.strip() == "5", five.stderr
