"""kombu's SQLAlchemy transport, for the embedded default, polling every 50 ms instead of every second.

kombu's virtual transports poll an idle queue once a second, which put a second
between a submission and its worker on the embedded default. The interval is a
transport option, but kombu's SQLAlchemy channel passes all its options on to
create_engine(), which refuses it; this subclass keeps it for the poller.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy as kombu_sqla

POLLING_INTERVAL = 0.05


class Channel(kombu_sqla.Channel):
    def _engine_from_config(self) -> Any:
        options = dict(self.connection.client.transport_options)
        for key in ("queue_tablename", "message_tablename", "callback", "errback", "max_retries",
                    "interval_start", "interval_step", "interval_max", "retry_errors",
                    "polling_interval"):
            options.pop(key, None)
        return kombu_sqla.create_engine(self.connection.client.hostname, **options)


class Transport(kombu_sqla.Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL
