"""Statistics on plain tables (pure)."""
