"""GPU work: batched per-entity additive models and a HorovodRunner-style runner.

Nothing here probes a device at import time; torch is an optional extra (`pip install .[gpu]`).
"""
