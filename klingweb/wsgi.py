"""WSGI entry point (gunicorn serves ``klingweb.wsgi:application``)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "klingweb.settings")
application = get_wsgi_application()

# gunicorn's access log names each request path, and a callback's path carries its token.
from klingweb.redaction import install_log_redaction  # noqa: E402 - after Django is set up

install_log_redaction("gunicorn.access", "gunicorn.error")
