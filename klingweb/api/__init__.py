"""The programmatic API (``/api/v1/``) and the team API keys it is called with.

A thin layer over the forms and services the pages use (DESIGN.md §1): a task created
through the API is validated by the family's own form and queued by the same service.
"""
