"""Grouped-apply training: the pure per-entity function, its backends, outputs and the job."""
