"""The medallion: sources -> bronze -> silver -> gold, on any backend (engine.backends)."""
