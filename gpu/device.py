"""Which torch device GPU work runs on, chosen when work starts (never at import)."""
from __future__ import annotations

import os

ENV = "MANYMODELS_DEVICE"


def pick_device(preferred=None):
    """`preferred` (a name or torch.device), else $MANYMODELS_DEVICE, else CUDA when available, else the CPU."""
    import torch
    name = preferred if preferred is not None else os.environ.get(ENV)
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but torch sees no CUDA device "
                           f"(unset {ENV} or set it to 'cpu')")
    return device
