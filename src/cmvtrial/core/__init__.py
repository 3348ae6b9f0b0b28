"""Pure trial rules: no I/O, no database, no clock. Callers pass `today`, the protocol and an rng."""
