"""Registers the BIND fixtures (`bind`, `bind_server`) so tests can use them without importing them."""
pytest_plugins = ["tests.fakes.bind"]
