"""Configuration of the Kling sandbox: accounts, the task clock and the fault knobs.

Plain Python (no Django). The server reads the config on every request, so tests and the
reliability suites can change the knobs of a running ``SandboxServer`` through
``server.config`` (for example ``server.config.error_rate = 0.3``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_ACCESS_KEY = "sandbox-access-key"
DEFAULT_SECRET_KEY = "sandbox-secret-key-loopback-only-0123456789"

# The knobs ``SandboxServer.reset_faults()`` puts back, with their "no fault" value (and
# ``unified_serves_legacy``, a vendor behaviour a test may switch on: back to the default).
FAULT_DEFAULTS: dict[str, float | int | bool | None] = {
    "error_rate": 0.0,
    "create_rate_limit_rate": 0.0,
    "create_concurrency_rate": 0.0,
    "latency": 0.0,
    "concurrency_limit": None,
    "callback_drop_rate": 0.0,
    "callback_duplicate_rate": 0.0,
    "account_error_code": None,
    "unified_serves_legacy": False,
}


@dataclass
class SandboxConfig:
    """Settings of one sandbox; mutable at runtime.

    - ``accounts``: ``{access_key: secret_key}``; a JWT is accepted when its ``iss`` is one of
      the access keys and it is signed (HS256) with that key's secret (KLING_API.md §1).
      Every access key is a separate vendor account: its own tasks, external_task_id space,
      concurrency slots and resource pack.
    - ``task_seconds``: seconds on the sandbox clock from create to the final status; the task
      turns ``processing`` after a third of it (KLING_API.md §4).
    - ``error_rate``: probability in [0, 1] that any API request answers 5000 (HTTP 500) or
      5001 (HTTP 503) instead of doing anything.
    - ``create_rate_limit_rate``: probability that a create answers 1302 (HTTP 429).
    - ``create_concurrency_rate``: probability that a create answers 1303 (HTTP 429).
    - ``latency``: seconds added before every API answer (the work is done first, so a
      client that times out on a create may still find the task afterwards).
    - ``concurrency_limit``: unfinished tasks an account may have; a create beyond it answers
      1303 (HTTP 429). ``None``: no limit.
    - ``callback_drop_rate``: probability that a callback delivery is silently not sent.
    - ``callback_duplicate_rate``: probability that a callback is delivered twice.
    - ``account_error_code``: 1100, 1101 or 1102 makes every create answer that account
      error (HTTP 429: account exception, arrears, resource pack used up); 1304 (IP
      allow-list policy, HTTP 429) refuses *every* API request, queries included, since an
      allow-list blocks the caller's address, not one kind of call; ``None``: off.
    - ``seed``: seed of the sandbox's random generator (fault draws and generated ids), for
      reproducible runs; ``None`` seeds from the OS.
    - ``api_keys``: ``{api_key: account}``; ``Authorization: Bearer <api_key>`` (the key
      itself, KLING_API_2026.md §2) authenticates as ``account``. Use an access key of
      ``accounts`` as the account to make the key and the AK/SK pair one vendor account
      (same tasks, external ids, limits and pack); any other name is an account of its own.
      API keys work on every endpoint; AK/SK JWTs only on the legacy ``/v1`` and
      ``/account`` paths (the new design answers a JWT with HTTP 401, code 1000).
    - ``cash``: ``True`` makes every account a cash (balance) account: legacy tasks report
      ``final_unit_deduction "0"`` plus ``final_balance_deduction{quota, list_price}`` and
      new-design tasks ``billing[{charge_type "cash", cash_type, amount, currency,
      list_price}]``, in USD (KLING_API_2026.md §7); ``False``: a unit (resource pack)
      account, ``billing[{charge_type "unit", amount, package_type}]``.
    - ``cash_discount``: the balance is charged ``list_price × cash_discount`` (a fraction in
      (0, 1]; 1 = list price). ``quota``/``amount`` carry the discounted figure.
    - ``fetch_timeout``: seconds the sandbox waits for a reference video it fetches from a
      URL (element ``video_url``, Omni ``feature_video``/``base_video``, motion-control
      ``video``) before refusing the create with 1201.
    - ``tasks_batch_max``: most ids one ``GET /tasks`` accepts (the vendor's maximum is not
      documented; see ``klingweb.sandbox.unified``).
    - ``unified_serves_legacy``: ``False`` (the default): ``GET /tasks`` answers only
      2026-design tasks, since the vendor's pages are silent on legacy ones
      (KLING_API_2026.md §3) and the sandbox is never more generous than the docs; ``True``:
      it also answers the account's legacy ``/v1`` tasks by ``task_ids`` /
      ``external_task_ids``, in the new design's item shape (``id``, ``status``,
      ``outputs[]``, ``billing[]``; §3, §6), so tests and benches can show both vendor
      behaviours. ``POST /tasks`` lists 2026-design tasks only either way.
    """

    accounts: dict[str, str] = field(
        default_factory=lambda: {DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY}
    )
    task_seconds: float = 5.0
    error_rate: float = 0.0
    create_rate_limit_rate: float = 0.0
    create_concurrency_rate: float = 0.0
    latency: float = 0.0
    concurrency_limit: int | None = None
    callback_drop_rate: float = 0.0
    callback_duplicate_rate: float = 0.0
    account_error_code: int | None = None
    seed: int | None = None
    api_keys: dict[str, str] = field(default_factory=dict)
    cash: bool = False
    cash_discount: float = 1.0
    fetch_timeout: float = 10.0
    tasks_batch_max: int = 100
    unified_serves_legacy: bool = False

    def reset_faults(self) -> None:
        """Set every fault knob (``FAULT_DEFAULTS``) back to "no fault"."""
        for name, value in FAULT_DEFAULTS.items():
            setattr(self, name, value)
