"""Configuration: the typed settings model and checked-in defaults (no secrets)."""
