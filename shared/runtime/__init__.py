"""What a process runs with: settings, logs, the queue and its SQLite broker, failpoints, sealed
secrets."""
