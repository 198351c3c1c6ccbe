"""reidexplain: explain person re-identification and other embedding models.

The entry point is :class:`Explainer` (Attribute-guided Metric Distillation, AMD); the Captum baselines in
:mod:`reidexplain.baselines` return the same :class:`PairAttribution` objects, drawn by
:func:`compare`. Feature adapters (:mod:`reidexplain.adapters`), data (:mod:`reidexplain.data`), reference
models (:mod:`reidexplain.zoo`) and metrics (:mod:`reidexplain.metrics`) are subpackages; the extension
points (adapters, recipes, baselines, schemas) are registries exported here (``docs/architecture.md``).

Examples:
    >>> import reidexplain
    >>> reidexplain.get_schema("market1501").names[:2]
    ('backpack', 'bag')
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from reidexplain import adapters, baselines, data, metrics, zoo
from reidexplain.adapters import ADAPTERS, FeatureAdapter, adapt_model, register_adapter
from reidexplain.attributes import (
    DUKEMTMC,
    MARKET1501,
    MARKET1501_AGE,
    SCHEMAS,
    SHARED,
    AttributeSchema,
    get_schema,
    list_schemas,
    project_labels,
    register_schema,
)
from reidexplain.attribution import MatrixExplanation, PairAttribution
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
    register_baseline,
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
from reidexplain.interpreter import (
    RECIPES,
    AMDModel,
    AMDPlus,
    PaperAMD,
    Recipe,
    TrainingConfig,
    create_recipe,
)
from reidexplain.ranking import GalleryIndex, RankComparison, RankingExplanation, plot_ranking
from reidexplain.registry import Registry, UnknownNameError
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
    "MatrixExplanation",
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
    "register_baseline",
    # feature adapters
    "ADAPTERS",
    "FeatureAdapter",
    "adapt_model",
    "register_adapter",
    # recipes and training
    "RECIPES",
    "Recipe",
    "PaperAMD",
    "AMDPlus",
    "create_recipe",
    "TrainingConfig",
    "AMDModel",
    # registries
    "Registry",
    "UnknownNameError",
    # attributes
    "AttributeSchema",
    "MARKET1501",
    "MARKET1501_AGE",
    "DUKEMTMC",
    "SHARED",
    "SCHEMAS",
    "register_schema",
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
    "adapters",
    "baselines",
    "data",
    "metrics",
    "zoo",
]
