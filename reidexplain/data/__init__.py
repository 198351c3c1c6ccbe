"""Data: synthetic pedestrians with ground truth, the Market-1501/DukeMTMC readers, users' own folders.

Examples:
    >>> from reidexplain.data import SyntheticPersons, synthetic_splits
    >>> len(SyntheticPersons(2, 3, image_size=(64, 32)))
    6
"""

from __future__ import annotations

from reidexplain.data._identity import Identity, Nuisance
from reidexplain.data.image_folder import ImageFolderCSV
from reidexplain.data.market1501 import (
    DukeMTMCreID,
    Market1501,
    write_dukemtmc,
    write_market1501,
)
from reidexplain.data.sampler import PKSampler
from reidexplain.data.synthetic import SyntheticPersons, synthetic_splits

__all__ = [
    "SyntheticPersons", "synthetic_splits", "Identity", "Nuisance",
    "Market1501", "DukeMTMCreID", "write_market1501", "write_dukemtmc", "PKSampler", "ImageFolderCSV",
]
