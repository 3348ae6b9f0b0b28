"""Documents made from analysis results: the self-contained HTML trial report (and its JSON)."""
