"""The one CSV writer of the portal: cells a spreadsheet would run as formulas are neutralised.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula, and
some also after a leading tab or carriage return (CSV injection). A file written with
commas is often opened by a program that splits on ``;`` (or on tabs, or ``|``), so a cell
such as ``Ops;=1+2;x`` becomes three cells there, the middle one a formula. Hence a cell is
neutralised when it starts with one of those characters, and after every separator
(``, ; | tab CR LF``) that is followed by one: a ``'`` is put in front of that character,
which spreadsheets show as text. Plain numbers (``-12.5``) are left as they are, so figures
stay numbers.

``csv_cell(value)`` makes one cell safe; ``writer(file)`` is ``csv.writer`` whose
``writerow``/``writerows`` pass every cell through ``csv_cell``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any

#: Characters that start a formula (or are skipped before one) in common spreadsheets.
FORMULA_CHARACTERS = "=+-@\t\r"
#: Characters some program may split a cell on.
SEPARATORS = ",;|\t\r\n"
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
# A formula character at the start or right after a separator, spaces allowed between (some
# programs trim them). Only the separator is consumed: it may itself be a formula character
# (tab, CR) that the next match must see.
_DANGER = re.compile(rf"(^|[{re.escape(SEPARATORS)}])( *)(?=[{re.escape(FORMULA_CHARACTERS)}])")


def csv_cell(value: Any) -> str:
    """``value`` as the text of a CSV cell no spreadsheet runs as a formula.

    ``None`` → ``""``; a plain number (``12``, ``-12.5``) is kept; otherwise a ``'`` is put
    before a formula character (``= + - @`` tab CR) at the start and after every separator
    (``, ; |`` tab CR LF), spaces between allowed. ``"=1+2"`` → ``"'=1+2"``; ``"Ops;=1+2;x"`` → ``"Ops;'=1+2;x"``.
    """
    text = "" if value is None else str(value)
    if not text or _NUMBER.fullmatch(text):
        return text
    return _DANGER.sub(r"\1\2'", text)


class _SafeWriter:
    """``csv.writer`` with every cell passed through ``csv_cell``."""

    def __init__(self, file: Any, **kwargs: Any):
        self._writer = csv.writer(file, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        """Write one row of safe cells; returns what the file's ``write`` returned."""
        return self._writer.writerow([csv_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        """Write every row of ``rows`` (each cell through ``csv_cell``)."""
        for row in rows:
            self.writerow(row)


def writer(file: Any, **kwargs: Any) -> _SafeWriter:
    """A ``csv.writer(file, **kwargs)`` whose cells are neutralised (``csv_cell``)."""
    return _SafeWriter(file, **kwargs)
