"""Run django-q2 jobs of a test synchronously, when the test says so.

``record_jobs`` (used by each test module's ``jobs`` fixture) records what the code
enqueues with ``async_task`` instead of handing it to a cluster; ``jobs.post(client, url)``
makes a request and lets its ``on_commit`` callbacks fire (the test's transaction never commits); ``jobs.run()`` then calls each
recorded job function directly, as a cluster worker would, and returns their results.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.utils.module_loading import import_string


@dataclass
class Jobs:
    """Jobs enqueued by the code under test, run only when the test calls ``run``."""

    capture: Callable[..., Any]
    queued: list[tuple[str, tuple]] = field(default_factory=list)

    def post(self, client, url: str, **extra: Any):
        """``client.post(url, **extra)`` with its on-commit callbacks executed."""
        with self.capture(execute=True):
            return client.post(url, **extra)

    def names(self) -> list[str]:
        """Dotted paths of the queued jobs, in order."""
        return [func for func, _args in self.queued]

    def run(self) -> list[Any]:
        """Run every queued job (in order) and empty the queue; returns their results."""
        queued, self.queued = self.queued, []
        return [import_string(func)(*args) for func, args in queued]


def record_jobs(monkeypatch, django_capture_on_commit_callbacks) -> Jobs:
    """Record ``async_task`` calls instead of queuing them (see ``Jobs``); takes pytest's
    ``monkeypatch`` and pytest-django's ``django_capture_on_commit_callbacks`` fixtures."""
    recorder = Jobs(capture=django_capture_on_commit_callbacks)
    monkeypatch.setattr(
        "django_q.tasks.async_task",
        lambda func, *args, **kwargs: recorder.queued.append((func, args)),
    )
    return recorder


def closed_port_url() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens (a Kling that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class CallbackJobs:
    """Callbacks posted as the vendor posts them, with the receiver's on-commit job
    (``tasks_app.jobs.task_confirm``: the query that confirms a final callback) run at once
    and inline, as an idle cluster worker would. Made by the ``callback_jobs`` fixtures of
    the callback test modules (``callback_jobs_for``)."""

    def __init__(self, capture: Callable[..., Any]):
        self.capture = capture

    def post(self, client, path: str, body: Any, **headers: Any):
        """POST ``body`` (a dict, or raw ``bytes``/``str``) as JSON to ``path``; returns the
        response once the jobs it enqueued on commit have run."""
        import json

        data = body if isinstance(body, bytes | str) else json.dumps(body)
        with self.capture(execute=True):
            return client.post(path, data=data, content_type="application/json", **headers)


def callback_jobs_for(monkeypatch, django_capture_on_commit_callbacks) -> CallbackJobs:
    """A ``CallbackJobs``, with django-q2 running enqueued jobs inline (``Conf.SYNC``)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
    return CallbackJobs(django_capture_on_commit_callbacks)
