"""Code that both the API and the worker need: settings, models, sessions, schemas, the queue."""
