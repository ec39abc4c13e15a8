"""``python manage.py kling_api`` against the sandbox: JSON on stdout, one-line errors.

In-process runs use ``call_command`` with settings pointed at the sandbox
(``kling_settings``); two runs go through a real ``manage.py`` subprocess with the
environment variables an operator sets, to check stdout, stderr and the exit code.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from klingweb.kling import KlingClient
from tests.conftest import SANDBOX_AK, SANDBOX_SK

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

ROOT = Path(__file__).resolve().parent.parent
TEXT2VIDEO = {"model_name": "kling-v1-6", "prompt": "A corgi runs on a beach", "duration": "5"}


def run(*args: str) -> object:
    """Run the command in-process and return its stdout parsed as JSON."""
    out = io.StringIO()
    call_command("kling_api", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def made_task(kling_settings, fresh_sandbox):
    """A finished text-to-video task of the sandbox account: (task_id, external_task_id)."""
    external = f"cmd-{uuid.uuid4()}"
    with KlingClient(
        access_key=SANDBOX_AK, secret_key=SANDBOX_SK, base_url=fresh_sandbox.base_url
    ) as client:
        task = client.create_task("text2video", dict(TEXT2VIDEO, external_task_id=external))
    fresh_sandbox.advance(2.0)
    return task.task_id, external


def test_get_by_task_id_and_by_external_task_id_print_the_vendor_data(made_task):
    task_id, external = made_task
    by_id = run("get", "text2video", task_id)
    by_external = run("get", "text2video", external)
    assert by_id == by_external
    assert by_id["task_id"] == task_id
    assert by_id["task_info"]["external_task_id"] == external
    assert by_id["task_status"] == "succeed"
    assert isinstance(by_id["final_unit_deduction"], str)  # raw vendor shape, not parsed
    assert by_id["task_result"]["videos"][0]["url"]


def test_list_prints_a_page_newest_first(made_task):
    task_id, _ = made_task
    page = run("list", "text2video")
    assert isinstance(page, list) and page[0]["task_id"] == task_id
    assert [item["task_id"] for item in run("list", "text2video", "--size", "1")] == [task_id]
    second = run("list", "text2video", "--page", "2", "--size", "1")
    assert len(second) <= 1 and all(item["task_id"] != task_id for item in second)


@pytest.mark.parametrize(
    "family", ["multi-shot", "avatar", "video-extend", "text2video", "image2video", "elements"]
)
def test_list_every_family(kling_settings, family):
    assert isinstance(run("list", family, "--size", "5"), list)


def test_list_preset_elements(kling_settings):
    presets = run("list", "preset-elements")
    elements = [element for task in presets for element in task["task_result"]["elements"]]
    assert elements and {element["owned_by"] for element in elements} == {"kling"}


def test_costs_prints_the_resource_packs(kling_settings):
    data = run("costs")
    (pack,) = data["resource_pack_subscribe_infos"]
    assert pack["resource_pack_name"]
    assert pack["status"] == "online"
    assert float(pack["remaining_quantity"]) <= float(pack["total_quantity"])


def test_unknown_task_is_one_line_with_code_message_and_request_id(kling_settings):
    with pytest.raises(CommandError) as info:
        run("get", "avatar", f"no-such-{uuid.uuid4()}")
    text = str(info.value)
    assert "\n" not in text
    assert "code=1203" in text
    assert "request_id=" in text and "request_id=None" not in text
    assert "not found" in text


def test_invalid_page_size_is_1201(kling_settings):
    with pytest.raises(CommandError) as info:
        run("list", "avatar", "--size", "501")
    assert "code=1201" in str(info.value) and "pageSize" in str(info.value)


def test_wrong_secret_key_is_1002(kling_settings):
    kling_settings.KLING_SECRET_KEY = "not-the-secret-key-0123456789"
    with pytest.raises(CommandError) as info:
        run("list", "avatar")
    assert "code=1002" in str(info.value)


def test_unreachable_host_is_a_network_error(kling_settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kling_settings.KLING_API_BASE_URL = f"http://127.0.0.1:{port}"
    kling_settings.KLING_CONNECT_TIMEOUT = 0.5
    with pytest.raises(CommandError) as info:
        run("get", "avatar", "1")
    text = str(info.value)
    assert "code=None" in text and "class=network" in text and "\n" not in text


def test_missing_credentials_are_refused(kling_settings):
    kling_settings.KLING_ACCESS_KEY = ""
    with pytest.raises(CommandError, match="KLING_ACCESS_KEY"):
        run("costs")


@pytest.mark.parametrize(
    "args", [("get", "preset-elements", "1"), ("list", "nope"), ("get", "avatar"), ()]
)
def test_bad_arguments_are_refused(kling_settings, args):
    with pytest.raises(CommandError):
        run(*args)


# -- as an operator runs it --------------------------------------------------------------


def manage(sandbox, *args: str) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        KLING_API_BASE_URL=sandbox.base_url,
        KLING_ACCESS_KEY=SANDBOX_AK,
        KLING_SECRET_KEY=SANDBOX_SK,
        PYTHONWARNINGS="ignore",
    )
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "kling_api", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_subprocess_prints_json_and_exits_zero(made_task, fresh_sandbox):
    task_id, external = made_task
    result = manage(fresh_sandbox, "get", "text2video", external)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["task_id"] == task_id


def test_subprocess_vendor_error_is_one_stderr_line_and_exit_one(fresh_sandbox):
    result = manage(fresh_sandbox, "get", "image2video", "no-such-task")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "code=1203" in lines[0] and "request_id=" in lines[0] and "message=" in lines[0]


# -- API keys and the unified query GET /tasks (KLING_API_2026.md §2, §3) -----------------


@pytest.fixture
def fake_kling():
    """A loopback fake of the vendor's 2026 design (the sandbox does not speak it yet)."""
    from tests.test_kling_client_2026 import FakeKling

    server = FakeKling().start()
    yield server
    server.stop()


@pytest.fixture
def key_settings(settings, fake_kling):
    """The operator default account as an API key only, pointed at the fake vendor."""
    settings.KLING_API_BASE_URL = fake_kling.base_url
    settings.KLING_API_KEY = API_KEY
    settings.KLING_ACCESS_KEY = ""
    settings.KLING_SECRET_KEY = ""
    return settings


def answer_tasks(seen) -> tuple[int, dict]:
    """``GET /tasks``: one succeeded item per asked id, in the vendor's documented shape."""
    from tests.test_kling_client_2026 import VIDEO_SUCCEEDED, envelope

    (key,) = seen.query
    field = "id" if key == "task_ids" else "external_id"
    ids = seen.query[key][0].split(",")
    return 200, envelope([dict(VIDEO_SUCCEEDED, **{field: ident}) for ident in ids])


API_KEY = "operator-api-key-0123456789abcdef"


def test_tasks_prints_the_unified_query_data_with_the_api_key_as_bearer(key_settings, fake_kling):
    fake_kling.routes[("GET", "/tasks")] = answer_tasks
    data = run("tasks", "t-1,t-2", "t-3")
    (seen,) = fake_kling.seen
    assert seen.raw_path == "/tasks?task_ids=t-1,t-2,t-3"
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    # The vendor's data[] items as sent (raw, not parsed): 2026 field names and strings.
    assert [item["id"] for item in data] == ["t-1", "t-2", "t-3"]
    assert data[0]["status"] == "succeeded"
    assert data[0]["billing"] == [
        {"charge_type": "unit", "amount": "0.3333", "package_type": "video"}
    ]


def test_tasks_external_asks_by_external_task_ids(key_settings, fake_kling):
    fake_kling.routes[("GET", "/tasks")] = answer_tasks
    data = run("tasks", "--external", "ours-1,ours-2")
    assert fake_kling.seen[0].raw_path == "/tasks?external_task_ids=ours-1,ours-2"
    assert [item["external_id"] for item in data] == ["ours-1", "ours-2"]


def test_tasks_with_more_ids_than_a_batch_prints_one_joined_list(key_settings, fake_kling):
    fake_kling.routes[("GET", "/tasks")] = answer_tasks
    ids = [f"t-{n}" for n in range(150)]
    data = run("tasks", ",".join(ids))
    assert len(fake_kling.seen) == 2  # ⌈150 / 100⌉
    assert [item["id"] for item in data] == ids


def test_costs_and_get_use_the_api_key_on_legacy_paths(key_settings, fake_kling):
    from tests.test_kling_client_2026 import envelope

    fake_kling.routes[("GET", "/account/costs")] = lambda seen: (
        200,
        envelope({"resource_pack_subscribe_infos": []}),
    )
    fake_kling.routes[("GET", "/v1/videos/text2video/t-1")] = lambda seen: (
        200,
        envelope({"task_id": "t-1", "task_status": "processing"}),
    )
    assert run("costs") == {"resource_pack_subscribe_infos": []}
    assert run("get", "text2video", "t-1")["task_status"] == "processing"
    assert [s.headers["authorization"] for s in fake_kling.seen] == [f"Bearer {API_KEY}"] * 2


def test_tasks_with_an_access_key_pair_says_api_keys_only(kling_settings):
    with pytest.raises(CommandError) as info:
        run("tasks", "t-1")
    text = str(info.value)
    assert "accepts API keys only" in text and "class=permission" in text and "\n" not in text


def test_both_kinds_of_credentials_are_refused(key_settings):
    key_settings.KLING_ACCESS_KEY = SANDBOX_AK
    key_settings.KLING_SECRET_KEY = SANDBOX_SK
    with pytest.raises(CommandError, match="not both"):
        run("costs")


@pytest.mark.parametrize("ids", ["t-1,,t-2", ",", "t-1,"])
def test_tasks_refuses_an_empty_id_and_sends_nothing(key_settings, fake_kling, ids):
    with pytest.raises(CommandError, match="no empty id"):
        run("tasks", ids)
    assert fake_kling.seen == []


def operator_env(**kling: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
        and not key.startswith("KLING_")
    }
    env.update(kling, PYTHONWARNINGS="ignore")
    return env


def test_subprocess_with_only_kling_api_key_runs_tasks(fake_kling):
    fake_kling.routes[("GET", "/tasks")] = answer_tasks
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "kling_api", "tasks", "t-7"],
        cwd=ROOT,
        env=operator_env(KLING_API_KEY=API_KEY, KLING_API_BASE_URL=fake_kling.base_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert [item["id"] for item in json.loads(result.stdout)] == ["t-7"]
    assert fake_kling.seen[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_subprocess_with_both_kinds_of_credentials_fails_at_start_up(fake_kling):
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "kling_api", "costs"],
        cwd=ROOT,
        env=operator_env(
            KLING_API_KEY=API_KEY,
            KLING_ACCESS_KEY=SANDBOX_AK,
            KLING_SECRET_KEY=SANDBOX_SK,
            KLING_API_BASE_URL=fake_kling.base_url,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "Set either KLING_API_KEY, or KLING_ACCESS_KEY and KLING_SECRET_KEY" in result.stderr
    assert API_KEY not in result.stderr and SANDBOX_SK not in result.stderr
    assert fake_kling.seen == []
