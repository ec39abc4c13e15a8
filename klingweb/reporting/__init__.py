"""Reporting: usage figures, usage pages and CSV exports, read from the deduction ledger.

Depends on the ledger one way: it imports ``tasks_app`` (``Deduction``, ``Task``,
``tasks_app.budgets``) and ``klingweb.accounts``; nothing in ``tasks_app``, ``elements_app`` or
``accounts`` imports it.
"""
