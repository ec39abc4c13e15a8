"""WSGI entry point (gunicorn serves ``klingweb.wsgi:application``)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "klingweb.settings")
application = get_wsgi_application()
