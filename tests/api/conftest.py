"""The api tests' fixtures (authorized clients of the real app) live in tests/conftest.py."""
