"""Klingweb: a team portal for the Kling generation API (the Django project package)."""
