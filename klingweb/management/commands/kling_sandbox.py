"""``python manage.py kling_sandbox``: run the Kling look-alike server until Ctrl-C.

A thin wrapper around ``klingweb.sandbox.SandboxServer`` (issue 2 §3). Each knob comes from
its flag, else from the environment variable ``KLING_SANDBOX_<NAME>`` (for example
``KLING_SANDBOX_ERROR_RATE=0.1``), else from its default. The access/secret key default to
settings ``KLING_ACCESS_KEY``/``KLING_SECRET_KEY`` and the API key to ``KLING_API_KEY``
when set, so the portal's default account talks to the sandbox out of the box. The API key
(sent as ``Authorization: Bearer <key>``) belongs to the same sandbox account as the access
key; it works on every endpoint, the AK/SK pair only on the legacy ones (KLING_API_2026.md
§2). ``--cash`` (or ``KLING_SANDBOX_CASH=1``) makes the account a cash account.
``--unified-serves-legacy`` (or ``KLING_SANDBOX_UNIFIED_SERVES_LEGACY=1``) makes the unified
``GET /tasks`` answer legacy ``/v1`` tasks too (off by default: the vendor's pages are silent
on it, KLING_API_2026.md §3; see ``SandboxConfig.unified_serves_legacy``).
"""

from __future__ import annotations

import os
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from klingweb.sandbox import SandboxConfig, SandboxServer
from klingweb.sandbox.config import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY

# option name -> (type, default, help); the env variable is KLING_SANDBOX_<NAME upper>.
_KNOBS: dict[str, tuple[type, object, str]] = {
    "port": (int, 8700, "TCP port (0: a free one)"),
    "host": (str, "127.0.0.1", "address to listen on"),
    "public_url": (str, "", "base URL clients reach the sandbox under (for media URLs)"),
    "access_key": (str, "", "access key (default: settings.KLING_ACCESS_KEY or a demo key)"),
    "secret_key": (str, "", "secret key (default: settings.KLING_SECRET_KEY or a demo key)"),
    "api_key": (str, "", "API key, sent as 'Bearer <key>' (default: settings.KLING_API_KEY)"),
    "cash_discount": (float, 1.0, "cash accounts pay list price x this fraction (0, 1]"),
    "account_error_code": (int, None, "1100/1101/1102: creates refused; 1304: every request"),
    "fetch_timeout": (float, 10.0, "seconds to fetch a reference video from its URL"),
    "task_seconds": (float, 10.0, "seconds from create to the final status"),
    "error_rate": (float, 0.0, "probability of 5000/5001 on any API request"),
    "create_rate_limit_rate": (float, 0.0, "probability of 1302 on create"),
    "create_concurrency_rate": (float, 0.0, "probability of 1303 on create"),
    "latency": (float, 0.0, "seconds added before every API answer"),
    "concurrency_limit": (int, None, "unfinished tasks per account before 1303 (none: no limit)"),
    "callback_drop_rate": (float, 0.0, "probability that a callback is not sent"),
    "callback_duplicate_rate": (float, 0.0, "probability that a callback is sent twice"),
    "seed": (int, None, "seed of the random generator (reproducible faults and ids)"),
}
_RATES = (
    "error_rate",
    "create_rate_limit_rate",
    "create_concurrency_rate",
    "callback_drop_rate",
    "callback_duplicate_rate",
)


def _env_value(name: str, kind: type) -> object | None:
    variable = f"KLING_SANDBOX_{name.upper()}"
    raw = os.environ.get(variable)
    if raw is None or not raw.strip():
        return None
    try:
        return kind(raw.strip())
    except ValueError:
        raise CommandError(f"{variable} must be a {kind.__name__}, not {raw!r}.") from None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_ACCOUNT_CODES = (1100, 1101, 1102, 1304)


def _env_flag(name: str) -> bool:
    variable = f"KLING_SANDBOX_{name.upper()}"
    raw = os.environ.get(variable, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise CommandError(f"{variable} must be 1 or 0, not {raw!r}.")


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def resolve_options(options: dict) -> dict:
    """Merge flags, ``KLING_SANDBOX_*`` variables and defaults into the server's settings.

    Returns ``{name: value}`` for every knob of ``_KNOBS`` plus ``cash`` (bool, from
    ``--cash`` or ``KLING_SANDBOX_CASH``) and ``unified_serves_legacy`` (bool, from
    ``--unified-serves-legacy`` or ``KLING_SANDBOX_UNIFIED_SERVES_LEGACY``); raises ``CommandError`` on an unusable value (a
    rate outside [0, 1], a negative time, a bad number in a variable, an account error code
    other than 1100/1101/1102/1304, an API key equal to the access key).
    """
    values: dict = {}
    for name, (kind, default, _help) in _KNOBS.items():
        value = options.get(name)
        if value is None:
            value = _env_value(name, kind)
        values[name] = default if value is None else value
    if not values["access_key"]:
        values["access_key"] = getattr(settings, "KLING_ACCESS_KEY", "") or DEFAULT_ACCESS_KEY
    if not values["secret_key"]:
        values["secret_key"] = getattr(settings, "KLING_SECRET_KEY", "") or DEFAULT_SECRET_KEY
    if not values["api_key"]:
        # settings.KLING_API_KEY, else the variable itself (settings may not define it).
        values["api_key"] = (
            getattr(settings, "KLING_API_KEY", "") or os.environ.get("KLING_API_KEY", "").strip()
        )
    values["cash"] = bool(options.get("cash")) or _env_flag("cash")
    values["unified_serves_legacy"] = bool(options.get("unified_serves_legacy")) or _env_flag(
        "unified_serves_legacy"
    )
    if values["api_key"] and values["api_key"] == values["access_key"]:
        raise CommandError("--api-key must differ from the access key.")
    if not 0.0 < values["cash_discount"] <= 1.0:
        raise CommandError("--cash-discount must be in (0, 1].")
    if values["fetch_timeout"] <= 0:
        raise CommandError("--fetch-timeout must be positive.")
    code = values["account_error_code"]
    if code is not None and code not in _ACCOUNT_CODES:
        raise CommandError(
            f"--account-error-code must be one of {', '.join(map(str, _ACCOUNT_CODES))}."
        )
    for name in _RATES:
        if not 0.0 <= values[name] <= 1.0:
            raise CommandError(f"--{name.replace('_', '-')} must be between 0 and 1.")
    for name in ("task_seconds", "latency"):
        if values[name] < 0:
            raise CommandError(f"--{name.replace('_', '-')} must not be negative.")
    if values["concurrency_limit"] is not None and values["concurrency_limit"] < 1:
        raise CommandError("--concurrency-limit must be at least 1.")
    return values


class Command(BaseCommand):
    """Serve the Kling sandbox on ``--host``:``--port`` and print its base URL."""

    help = "Run the Kling look-alike sandbox server (KLING_API.md) until Ctrl-C."

    def add_arguments(self, parser) -> None:
        """One flag per knob of ``_KNOBS`` (``--task-seconds``, ``--error-rate``, ...)."""
        for name, (kind, default, text) in _KNOBS.items():
            env = f"KLING_SANDBOX_{name.upper()}"
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                dest=name,
                type=kind,
                default=None,
                help=f"{text}; env {env}; default {default!r}",
            )
        parser.add_argument(
            "--cash",
            action="store_true",
            default=None,
            help="a cash (balance) account: charges reported in USD; env KLING_SANDBOX_CASH",
        )
        parser.add_argument(
            "--unified-serves-legacy",
            action="store_true",
            default=None,
            help="GET /tasks also answers legacy /v1 tasks (undocumented vendor behaviour; "
            "off by default); env KLING_SANDBOX_UNIFIED_SERVES_LEGACY",
        )
        parser.add_argument(
            "--quiet", action="store_true", help="do not print one line per request"
        )

    def handle(self, *args, **options) -> None:
        """Start the server, print its base URL (first line, alone), block until Ctrl-C."""
        values = resolve_options(options)
        config = SandboxConfig(
            accounts={values["access_key"]: values["secret_key"]},
            task_seconds=values["task_seconds"],
            error_rate=values["error_rate"],
            create_rate_limit_rate=values["create_rate_limit_rate"],
            create_concurrency_rate=values["create_concurrency_rate"],
            latency=values["latency"],
            concurrency_limit=values["concurrency_limit"],
            callback_drop_rate=values["callback_drop_rate"],
            callback_duplicate_rate=values["callback_duplicate_rate"],
            seed=values["seed"],
            api_keys={values["api_key"]: values["access_key"]} if values["api_key"] else {},
            cash=values["cash"],
            cash_discount=values["cash_discount"],
            account_error_code=values["account_error_code"],
            fetch_timeout=values["fetch_timeout"],
            unified_serves_legacy=values["unified_serves_legacy"],
        )
        try:
            server = SandboxServer(
                config,
                host=values["host"],
                port=values["port"],
                public_url=values["public_url"] or None,
            )
        except OSError as exc:
            raise CommandError(f"cannot listen on {values['host']}:{values['port']}: {exc}")
        server.log_requests = not options.get("quiet")
        server.start()
        self.stdout.write(server.base_url)  # first line: the URL alone, easy to parse
        key_note = f", API key ...{values['api_key'][-4:]}" if values["api_key"] else ", no API key"
        self.stdout.write(
            f"Kling sandbox listening (access key {values['access_key']!r}{key_note}, "
            f"{'cash' if values['cash'] else 'unit'} account, "
            f"tasks take {values['task_seconds']:g} s"
            f"{', GET /tasks serves legacy tasks' if values['unified_serves_legacy'] else ''}"
            "). Ctrl-C to stop."
        )
        self.stdout.flush()
        if threading.current_thread() is threading.main_thread():
            # Process managers (honcho, systemd) stop with SIGTERM: shut down cleanly too.
            signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            self.stdout.write("Stopping the Kling sandbox.")
        finally:
            server.stop()
