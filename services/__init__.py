"""The processes of calib: the HTTP API, the Celery worker and the CLI."""
