"""Deprecated location of the batch reader: see :mod:`reidexplain._batch` (re-exported here).

Examples:
    >>> from reidexplain.interpreter._batch import unpack_batch
    >>> from reidexplain import _batch
    >>> unpack_batch is _batch.unpack_batch
    True
"""

from __future__ import annotations

from .._batch import Batch, item_field, iter_batches, split_known, unpack_batch

__all__ = ["Batch", "unpack_batch", "iter_batches", "split_known", "item_field"]
