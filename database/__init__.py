"""Tables, the engine and session factory, and the repositories that hold all of postroom's SQL."""
