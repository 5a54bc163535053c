"""Alembic migrations for the PathSynth database (run by ``pathsynth.storage.upgrade``; no alembic.ini needed)."""
