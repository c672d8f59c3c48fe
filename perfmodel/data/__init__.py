"""Preset files (TOML) shipped with fugakuperf: models/ and systems/."""
