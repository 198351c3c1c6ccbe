"""reidexplain: explain person re-identification and other embedding models.

The entry point is :class:`Explainer` (Attribute-guided Metric Distillation, AMD); the Captum baselines in
:mod:`reidexplain.baselines` return the same :class:`PairAttribution` objects, drawn by
:func:`compare`. Data (:mod:`reidexplain.data`), reference models (:mod:`reidexplain.zoo`) and metrics
(:mod:`reidexplain.metrics`) are subpackages.

Examples:
    >>> import reidexplain
    >>> reidexplain.get_schema("market1501").names[:2]
    ('backpack', 'bag')
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from reidexplain import baselines, data, metrics, zoo
from reidexplain.attributes import (
    DUKEMTMC,
    MARKET1501,
    MARKET1501_AGE,
    SHARED,
    AttributeSchema,
    get_schema,
    list_schemas,
    project_labels,
)
from reidexplain.attribution import PairAttribution
from reidexplain.baselines import (
    BASELINES,
    CaptumPair,
    FeatureAblationPair,
    GradCAMPair,
    IntegratedGradientsPair,
    OcclusionPair,
    PairDistance,
    SaliencyPair,
    captum_pair_explainer,
    create_baseline,
    list_baselines,
)
from reidexplain.data import (
    DukeMTMCreID,
    ImageFolderCSV,
    Market1501,
    PKSampler,
    SyntheticPersons,
    synthetic_splits,
    write_market1501,
)
from reidexplain.distance import distance_matrix, pair_distance
from reidexplain.explainer import METHODS, Explainer, NotFittedError
from reidexplain.ranking import GalleryIndex, RankComparison, RankingExplanation, plot_ranking
from reidexplain.visualization import compare, plot_attribution
from reidexplain.zoo import create_model, list_models, load_reference_model

try:
    __version__ = version("reidexplain")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "__version__",
    # explaining
    "Explainer",
    "METHODS",
    "NotFittedError",
    "PairAttribution",
    "compare",
    "plot_attribution",
    # ranked lists
    "RankingExplanation",
    "RankComparison",
    "GalleryIndex",
    "plot_ranking",
    # baselines
    "PairDistance",
    "IntegratedGradientsPair",
    "SaliencyPair",
    "OcclusionPair",
    "GradCAMPair",
    "FeatureAblationPair",
    "CaptumPair",
    "captum_pair_explainer",
    "BASELINES",
    "create_baseline",
    "list_baselines",
    # attributes
    "AttributeSchema",
    "MARKET1501",
    "MARKET1501_AGE",
    "DUKEMTMC",
    "SHARED",
    "get_schema",
    "list_schemas",
    "project_labels",
    # data and models
    "SyntheticPersons",
    "synthetic_splits",
    "Market1501",
    "DukeMTMCreID",
    "ImageFolderCSV",
    "write_market1501",
    "PKSampler",
    "create_model",
    "list_models",
    "load_reference_model",
    # distances
    "pair_distance",
    "distance_matrix",
    # subpackages
    "baselines",
    "data",
    "metrics",
    "zoo",
]
