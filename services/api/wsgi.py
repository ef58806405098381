"""The WSGI entry point for gunicorn: `gunicorn -c python:services.gunicorn_conf services.api.wsgi:app`."""

from services.api import create_app
from shared import logs

logs.configure("api")
app = create_app()
