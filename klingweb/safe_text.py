"""Text that ends up in places where a control character changes its meaning (issue 17).

- ``refuse_control_characters``: a form validator for names people choose (team names,
  element names). A newline in a team name used to break every mail that names the team
  (Django refuses a header with a line break: ``BadHeaderError``), and tabs or carriage
  returns split cells of spreadsheets opened from the CSV exports.
- ``mail_subject``: any text made into a one-line e-mail subject, for names stored before
  the validator existed (or edited in the Django admin).
"""

from __future__ import annotations

import re
import unicodedata

from django.core.exceptions import ValidationError

#: Unicode categories refused in names: controls (Cc: NUL..US, DEL, C1 controls, so tab,
#: CR and LF too) and the line and paragraph separators (Zl, Zp: U+2028, U+2029).
_REFUSED_CATEGORIES = {"Cc", "Zl", "Zp"}
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def has_control_characters(value: str) -> bool:
    """True when ``value`` holds a control character or a line/paragraph separator."""
    return any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in value)


def refuse_control_characters(value: str) -> None:
    """Form validator: raise ``ValidationError`` (code ``control_characters``) when ``value``
    holds a control character (tab, line break, NUL, ...) or a Unicode line separator."""
    if value and has_control_characters(value):
        raise ValidationError(
            "Use letters, digits, spaces and punctuation only: no line breaks, tabs or "
            "other control characters.",
            code="control_characters",
        )


def mail_subject(text: str) -> str:
    """``text`` as a one-line e-mail subject: every run of control characters and line
    separators becomes one space, and the ends are stripped. Safe for ``send_mail``."""
    return _LINE_BREAKS.sub(" ", text or "").strip()
