"""The WSGI entry point for gunicorn: `gunicorn -c python:services.gunicorn_conf services.api.wsgi:app`."""

from services.api import create_app
from services.api.memory import prepare_for_large_bodies
from shared.runtime import collector, logs

prepare_for_large_bodies()
logs.configure("api")
app = create_app()
collector.settle_after_start()
