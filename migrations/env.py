"""Alembic environment: metadata from shared.models, URL from the CALIB_* settings."""

from __future__ import annotations

from alembic import context

from shared.db import make_engine
from shared.models import Base
from shared.settings import get_settings

config = context.config
url = config.attributes.get("url") or get_settings().database
target_metadata = Base.metadata


def run_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
