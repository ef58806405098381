"""What the app holds for its requests: settings, the database, the queue publisher."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app

from shared.db import Database
from shared.queue import RUN_CHUNK
from shared.settings import Settings


@dataclass
class Services:
    settings: Settings
    db: Database
    celery: Celery

    def publish(self, chunk_id: str) -> None:
        self.celery.send_task(RUN_CHUNK, args=[chunk_id])


def services() -> Services:
    found = current_app.extensions["calib"]
    assert isinstance(found, Services)
    return found
