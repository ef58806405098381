"""Calibration arithmetic, numpy only: least squares and its statistics, the convergence rule, the
validation split, the packing of readings, a fit's statuses. No SQLAlchemy, no Flask, no Celery."""
