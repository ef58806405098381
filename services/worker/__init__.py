"""The Celery worker: claims fits, runs the torch engine, writes results."""
