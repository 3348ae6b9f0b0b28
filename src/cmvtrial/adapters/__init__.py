"""Thin adapters (CLI, API, web, interop) that translate between the outside world and the services."""
