"""The HTTP contract: request, response and query models, the optimizers' declarations, the rules
of a callback URL. Imports the domain below it, never the store (tests/test_layers.py)."""
