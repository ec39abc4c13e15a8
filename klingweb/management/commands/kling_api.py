"""``python manage.py kling_api``: the operator's command-line door to the Kling client.

    kling_api costs                              resource packs of the last 30 days
    kling_api get FAMILY ID                      one task by task_id or external_task_id
    kling_api list FAMILY [--page N] [--size M]  one page of tasks, newest first
    kling_api tasks ID[,ID…] [--external]        the unified query GET /tasks (2026 design)

FAMILY: multi-shot, avatar, video-extend, text2video, image2video, elements,
preset-elements (list only). ``tasks`` takes vendor task ids (``--external``: our
external_task_ids), comma-separated and/or as several arguments, and prints the ``data[]``
of ``GET /tasks?task_ids=…`` (KLING_API_2026.md §3; batched by the client, the answers
joined into one list); the 2026 design accepts API keys only.

Credentials of the operator's default account, from settings: ``KLING_API_KEY`` (sent as
``Authorization: Bearer <key>``), or ``KLING_ACCESS_KEY`` + ``KLING_SECRET_KEY`` (JWT), and
``KLING_API_BASE_URL``. Prints the vendor's ``data`` as JSON on stdout; on a vendor or
network error prints one line (code, message, request_id) on stderr and exits 1.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from klingweb.kling import SINGAPORE_BASE_URL, KlingClient, KlingError

# Command family name -> client family name (None: the vendor's preset elements).
FAMILIES: dict[str, str | None] = {
    "multi-shot": "multi_shot",
    "avatar": "avatar",
    "video-extend": "video_extend",
    "text2video": "text2video",
    "image2video": "image2video",
    "elements": "element",
    "preset-elements": None,
}
COSTS_DAYS = 30


class Command(BaseCommand):
    """Query the Kling API (KLING_API.md §4–§5, KLING_API_2026.md §3) with the operator's
    default account (an API key, or an access key / secret key pair)."""

    help = (
        "Query the Kling API: costs | get FAMILY ID | list FAMILY [--page N] [--size M] | "
        "tasks ID[,ID...] [--external]."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Sub-commands ``costs``, ``get``, ``list`` and ``tasks``."""
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="{costs,get,list,tasks}"
        )
        actions.add_parser("costs", help=f"Resource packs of the last {COSTS_DAYS} days.")
        get = actions.add_parser("get", help="One task by task_id or external_task_id.")
        get.add_argument("family", choices=[name for name, fam in FAMILIES.items() if fam])
        get.add_argument("id", help="A task_id or an external_task_id (same path position).")
        listing = actions.add_parser("list", help="One page of tasks, newest first.")
        listing.add_argument("family", choices=list(FAMILIES))
        listing.add_argument("--page", type=int, default=1, help="pageNum, 1..1000 (default 1).")
        listing.add_argument("--size", type=int, default=30, help="pageSize, 1..500 (default 30).")
        tasks = actions.add_parser(
            "tasks", help="Tasks by id with the unified query GET /tasks (2026 design)."
        )
        tasks.add_argument(
            "ids", nargs="+", metavar="ID[,ID...]", help="task_ids, comma-separated."
        )
        tasks.add_argument("--external", action="store_true", help="The ids are external_task_ids.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the sub-command; raises ``CommandError`` (exit 1) with a one-line error."""
        api_key = getattr(settings, "KLING_API_KEY", "")
        access_key, secret_key = settings.KLING_ACCESS_KEY, settings.KLING_SECRET_KEY
        if api_key and (access_key or secret_key):
            raise CommandError(
                "Set either KLING_API_KEY, or KLING_ACCESS_KEY and KLING_SECRET_KEY — not both."
            )
        if not api_key and not (access_key and secret_key):
            raise CommandError(
                "Set KLING_API_KEY, or KLING_ACCESS_KEY and KLING_SECRET_KEY "
                "(and KLING_API_BASE_URL)."
            )
        ids: list[str] = []
        if options["action"] == "tasks":
            ids = [part.strip() for arg in options["ids"] for part in arg.split(",")]
            if not all(ids):
                raise CommandError("tasks: give ids separated by commas, with no empty id.")
        credentials = (
            {"api_key": api_key}
            if api_key
            else {"access_key": access_key, "secret_key": secret_key}
        )
        client = KlingClient(
            **credentials,
            base_url=settings.KLING_API_BASE_URL or SINGAPORE_BASE_URL,
            connect_timeout=getattr(settings, "KLING_CONNECT_TIMEOUT", 5.0),
            read_timeout=getattr(settings, "KLING_READ_TIMEOUT", 30.0),
        )
        options["ids"] = ids
        try:
            data = self._run(client, options)
        except KlingError as exc:
            message = " ".join(str(exc.message).split())
            raise CommandError(
                f"Kling error code={exc.code} message={message} request_id={exc.request_id} "
                f"(class={exc.error_class.value}, http={exc.http_status})"
            ) from None
        finally:
            client.close()
        self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str))

    def _run(self, client: KlingClient, options: dict[str, Any]) -> Any:
        """The vendor ``data`` of the requested call (raw dicts, as the vendor sent them)."""
        action = options["action"]
        if action == "costs":
            end = datetime.now(UTC)
            packs = client.account_costs(start_time=end - timedelta(days=COSTS_DAYS), end_time=end)
            return {"resource_pack_subscribe_infos": [pack.raw for pack in packs]}
        if action == "tasks":
            # The client batches the ids (⌈n / batch⌉ requests); data[] items as sent.
            if options["external"]:
                found = client.get_tasks(external_task_ids=options["ids"])
            else:
                found = client.get_tasks(options["ids"])
            return [task.raw for task in found]
        family = FAMILIES[options["family"]]
        if action == "get":
            # task_id and external_task_id share the path position: one query covers both.
            return client.get_task(family, task_id=options["id"]).raw
        page, size = options["page"], options["size"]
        if family is None:
            tasks = client.list_preset_elements(page=page, page_size=size)
        else:
            tasks = client.list_tasks(family, page=page, page_size=size)
        return [task.raw for task in tasks]
