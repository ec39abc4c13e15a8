"""A real Chromium on the Django test client, without server processes: Playwright routes
every request of the page to ``django.test.Client`` in the test process (so the test's
database and signed-in user apply) and serves ``/static/`` from the staticfiles finders.

For page behaviour that needs a browser (CSS, htmx swaps, history) but not the cluster:
faster than ``tests/e2e`` and safe to run alone. Skipped when ``/usr/bin/chromium`` is
missing (``CI`` set: failed instead, as in tests/e2e).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# localhost: a "potentially trustworthy" origin, so COOP and the like apply as in production.
ORIGIN = "http://localhost:8765"
#: Request headers passed on to Django (htmx's own headers included).
_FORWARDED = ("hx-", "content-type", "accept", "x-csrftoken", "cookie")


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """A headless Chromium (Playwright), one per test module."""
    if not CHROMIUM.exists():
        if _ci():
            pytest.fail(f"{CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop on this thread; the route handlers call
    # Django (and the test database) synchronously on the same thread, which is safe here.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield from _launch(sync_playwright)
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _launch(sync_playwright) -> Iterator[object]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


def routed_page(chromium, client, *, width: int = 1280, height: int = 900):
    """A new page whose requests to ``ORIGIN`` are answered by ``client`` (a Django test
    client, already signed in as needed). Returns ``(page, errors)``: ``errors`` collects
    console errors, page errors and responses of 400 and up, for the test to assert on."""
    from django.contrib.staticfiles import finders

    context = chromium.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"JavaScript error {exc}"))

    def handle(route, request) -> None:
        try:
            answer(route, request)
        except Exception as exc:  # shown by the test's error list, not lost in Playwright
            errors.append(f"route {request.url}: {exc!r}")
            route.fulfill(status=599, body=repr(exc))

    def answer(route, request) -> None:
        parts = urlsplit(request.url)
        if parts.path.startswith("/static/"):
            found = finders.find(parts.path.removeprefix("/static/"))
            if found is None:
                errors.append(f"404 {request.url}")
                route.fulfill(status=404, body="")
                return
            kind = mimetypes.guess_type(found)[0] or "application/octet-stream"
            route.fulfill(status=200, path=found, headers={"Content-Type": kind})
            return
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower().startswith(_FORWARDED) and name.lower() != "cookie"
        }
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        response = client.generic(
            request.method, path, data=request.post_data_buffer or b"", headers=headers
        )
        if response.status_code >= 400:
            errors.append(f"{response.status_code} {request.url}")
        body = b"".join(response.streaming_content) if response.streaming else response.content
        out = {k: v for k, v in response.items() if k.lower() != "content-length"}
        route.fulfill(status=response.status_code, headers=out, body=body)

    page.route(f"{ORIGIN}/**", handle)
    return page, errors
