"""Code that both the API and the workers need, by layer: domain (arithmetic), contract (the HTTP
models), store (the database), runtime (settings, logs, the queue). See README: Layout."""
