"""Pagination of the task lists with a capped count: a page costs the same at 10k or 1M tasks.

Django's ``Paginator`` counts every matching row (``SELECT COUNT(*)``) to number the pages;
at 1M tasks that count is most of a list page's time and grows with the table. The
``CappedPaginator`` counts at most ``cap + 1`` rows past the start of the list (``SELECT
COUNT(*) FROM (SELECT … LIMIT cap + 1)``, which stops early on the list's index), or as many
as reaching the page asked for needs when that page lies beyond the cap. When more rows exist
than were counted, the paginator says so (``count_capped``) and the page shows "10,000+"
instead of a total; "Older →" stays available as long as rows remain, page after page.

The cap is the Django setting ``TASK_LIST_COUNT_CAP`` (rows, default ``COUNT_CAP``), and
``TASK_LIST_SEARCH_COUNT_CAP`` (default ``SEARCH_COUNT_CAP``) for a search; both are read when
a paginator is made, so tests can set small ones.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.utils.functional import cached_property

#: Rows counted at most (beyond it the page says "10,000+"); the ``TASK_LIST_COUNT_CAP``
#: setting overrides it.
COUNT_CAP = 10_000
#: Rows counted at most when the list is searched (``?q=``): "50+" (2 pages of 25); the
#: ``TASK_LIST_SEARCH_COUNT_CAP`` setting overrides it.
SEARCH_COUNT_CAP = 50
#: Page numbers beyond this widen the count no further (keeps the LIMIT a small integer).
MAX_PAGE = 1_000_000


def count_cap() -> int:
    """The cap in rows: ``settings.TASK_LIST_COUNT_CAP`` if set (a positive int), else
    ``COUNT_CAP``."""
    return int(getattr(settings, "TASK_LIST_COUNT_CAP", COUNT_CAP))


def list_count_cap(query: Any) -> int:
    """The cap for a list request whose GET parameters are ``query`` (a ``QueryDict``):
    ``settings.TASK_LIST_SEARCH_COUNT_CAP`` (default ``SEARCH_COUNT_CAP``) when it searches
    (a non-blank ``q``), else ``count_cap()``.

    A search counts fewer rows: every counted match is a heap row whose text is checked
    again after the trigram index (``tests/benchmarks/bench_list.py``, a common word at 1M
    tasks: about 105 ms a page counting to 10,000, about 60 ms counting to 1,000). A search
    counts in the list's order (``ordered``), so the count walks the same index as the page
    and stops at the cap; a team with a small share of the table otherwise got a bitmap scan
    of every match in the table (33 ms at 1M whatever the cap). The person sees "Page 1 of
    2+ · 50+ tasks" and "Older →" while more matches remain; a later page widens the count
    to reach it ("Page 3 of 3+ · 75+ tasks")."""
    if searches(query):
        return int(getattr(settings, "TASK_LIST_SEARCH_COUNT_CAP", SEARCH_COUNT_CAP))
    return count_cap()


def searches(query: Any) -> bool:
    """True when a list request whose GET parameters are ``query`` (a ``QueryDict`` or dict)
    searches: a non-blank ``q`` (a blank one is no search)."""
    return bool((query.get("q") or "").strip())


def list_paginator(queryset: Any, per_page: int, query: Any) -> CappedPaginator:
    """The ``CappedPaginator`` of a list request whose GET parameters are ``query``:
    ``per_page`` rows a page, capped at ``list_count_cap(query)`` rows, counting in the
    queryset's order when it ``searches``. Call ``get_page`` on it."""
    return CappedPaginator(queryset, per_page, cap=list_count_cap(query), ordered=searches(query))


class CappedPaginator(Paginator):
    """A ``Paginator`` over a queryset whose ``count`` stops at the cap.

    ``CappedPaginator(queryset, per_page, cap=None, ordered=False)``; ``cap`` in rows (None:
    ``count_cap()``); ``ordered``: count in the queryset's order (see ``list_count_cap``).
    Use ``get_page(number)`` (as the list views do): the page asked for widens the count so
    a page past the cap is still reachable. Attributes for the template:

    - ``count``: rows counted (int) — the real total unless ``count_capped``;
    - ``count_capped``: True when more rows exist than ``count_reach``;
    - ``count_reach``: rows known to exist when capped (the cap, or the end of the page
      asked for when that lies beyond it);
    - ``count_label``: "1,234" or "10,000+"; ``num_pages_label``: "50" or "400+".

    When capped, ``count`` is ``count_reach + 1`` so that the page after the reach exists
    (``has_next`` is True) and an out-of-range page falls back to a real count. Raises what
    ``Paginator`` raises (``EmptyPage``, ``PageNotAnInteger`` from ``page``).
    """

    def __init__(
        self,
        object_list: Any,
        per_page: int,
        *,
        cap: int | None = None,
        ordered: bool = False,
        **kw: Any,
    ):
        super().__init__(object_list, per_page, **kw)
        self.cap = count_cap() if cap is None else int(cap)
        self.ordered = ordered
        self._wanted = 1

    def get_page(self, number: Any) -> Page:
        """The page ``number`` (as ``Paginator.get_page``: page 1 for a non-number, the last
        page for one out of range), counting far enough to reach it."""
        try:
            wanted = int(number)
        except (TypeError, ValueError):
            wanted = 1
        # Bounded so the LIMIT stays a sane integer: an absurd page number costs one full
        # count and lands on the last page, as with Django's Paginator.
        self._wanted = min(max(1, wanted), MAX_PAGE)
        return super().get_page(number)

    @cached_property
    def count_reach(self) -> int:
        """Rows the count looks for before it stops: the cap, or the end of the page asked
        for when that lies beyond the cap."""
        return max(self.cap, self._wanted * self.per_page)

    @cached_property
    def count(self) -> int:
        """Rows of the list, counting at most ``count_reach + 1`` (one statement)."""
        limit = self.count_reach + 1
        object_list = self.object_list
        if hasattr(object_list, "order_by"):
            # The order does not change a count. Without it the LIMIT stops a scan of the
            # list's index early; with it (``ordered``, searches) the planner picks the
            # page's own plan (an index walk newest first) instead of a bitmap of every match.
            counted = object_list if self.ordered else object_list.order_by()
            n = counted[:limit].count()
        else:
            n = len(object_list[:limit])
        self.count_capped = n > self.count_reach
        return n

    count_capped = False

    @property
    def count_label(self) -> str:
        """The count for the page: "1,234", or "10,000+" when capped."""
        if self.count and self.count_capped:
            return f"{self.count_reach:,}+"
        return f"{self.count:,}"

    @property
    def num_pages_label(self) -> str:
        """The page total for the page: "50", or "400+" when the count is capped."""
        if self.count and self.count_capped:
            return f"{self.count_reach // self.per_page:,}+"
        return f"{self.num_pages:,}"
