"""The WSGI entry point for gunicorn: `gunicorn -c python:services.gunicorn_conf services.api.wsgi:app`."""

from services.api import create_app
from services.api.memory import return_what_parsing_frees
from shared import logs

return_what_parsing_frees()
logs.configure("api")
app = create_app()
