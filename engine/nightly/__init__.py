"""The nightly job: one locked, resumable, idempotent run per night (see job.py)."""
