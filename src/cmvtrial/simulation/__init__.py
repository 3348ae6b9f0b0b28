"""The in-silico trial (pure, vectorized)."""
