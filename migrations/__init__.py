"""Alembic migrations; a package so that an installed calib can find them."""
