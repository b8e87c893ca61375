"""DataFrames of float and text columns, built at numpy's speed.

pandas' general constructor (`pd.DataFrame({name: array})`) costs about 100 us for the routing
model's 14 columns, whatever their length: most of a 1-entity request's own time. A frame whose
columns are all float64 or all text (object) is two 2-D blocks, which pandas' block manager takes
as they are (15 us). That manager is pandas-internal, so anything unexpected (another column type,
a pandas whose internals moved) takes the public constructor: the same frame, slower.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd


def frame_of(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """`pd.DataFrame(columns)` for 1-D numpy columns of one length (a RangeIndex)."""
    arrays = list(columns.values())
    kinds = {a.dtype if isinstance(a, np.ndarray) and a.ndim == 1 else None for a in arrays}
    if arrays and kinds <= {np.dtype("float64"), np.dtype(object)} and len({len(a) for a in arrays}) == 1:
        try:
            return _from_blocks(list(columns), arrays)
        except (ImportError, AttributeError, TypeError, ValueError):
            pass
    return pd.DataFrame(columns, copy=False)


def _from_blocks(names: list[str], arrays: list[np.ndarray]) -> pd.DataFrame:
    from pandas._libs.internals import BlockPlacement
    from pandas.core.internals import BlockManager
    from pandas.core.internals.blocks import new_block

    blocks = []
    for dtype in (np.dtype("float64"), np.dtype(object)):
        where = [i for i, a in enumerate(arrays) if a.dtype == dtype]
        if where:
            values = np.vstack([arrays[i] for i in where])
            blocks.append(new_block(values, BlockPlacement(where), ndim=2))
    manager = BlockManager(tuple(blocks), [_labels(tuple(names)), pd.RangeIndex(len(arrays[0]))],
                           verify_integrity=False)
    return pd.DataFrame._from_mgr(manager, axes=manager.axes)


@lru_cache(maxsize=64)
def _labels(names: tuple[str, ...]) -> pd.Index:
    """The column labels (an Index is immutable, so frames can share one; building it costs 20 us)."""
    return pd.Index(names)
