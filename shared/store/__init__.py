"""The database: the ORM models and sessions, and everything that reads or writes rows (loss
blocks, the outbox, quotas, tokens, retention, calibrations and their drift, webhook deliveries,
the bodies presented from rows)."""
