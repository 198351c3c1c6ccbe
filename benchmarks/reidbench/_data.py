"""Data of the benchmark: rendered once, as lists of item dicts a default DataLoader batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from reidexplain.attributes import AttributeSchema, get_schema, project_labels
from reidexplain.data import PKSampler, SyntheticPersons, synthetic_splits
from reidexplain.zoo.reference import REFERENCE_CONFIG, reference_splits

from ._config import BenchmarkSize

__all__ = ["BenchmarkData", "ProjectedLabels", "materialise", "prepare_data", "pk_loader", "eval_loader",
           "stack_images"]

_KEYS = ("image", "pid", "camid", "attributes")


def materialise(dataset: Dataset, desc: str = "rendering", progress: bool = False) -> list[dict[str, Any]]:
    """Render every item of ``dataset`` once (image, pid, camid, attributes; no masks).

    Examples:
        >>> from reidexplain.data import SyntheticPersons
        >>> items = materialise(SyntheticPersons(2, 2, image_size=(64, 32), with_masks=False))
        >>> len(items), sorted(items[0])
        (4, ['attributes', 'camid', 'image', 'pid'])
    """
    items = []
    for i in tqdm(range(len(dataset)), desc=desc, disable=not progress, leave=False):
        item = dataset[i]
        items.append({k: item[k] for k in _KEYS})
    return items


class ProjectedLabels(Dataset):
    """Items of another dataset with their attribute labels re-expressed in another schema.

    Used for the cross-domain run: both synthetic domains are labelled over the 18 attributes of
    :data:`~reidexplain.attributes.SHARED` with :func:`~reidexplain.attributes.project_labels`.

    Args:
        items: A dataset or list of item dicts with ``"attributes"`` in the ``source`` schema.
        source: Schema of the labels of ``items``.
        target: Schema to project onto (every one of its attributes must exist in ``source``).

    Raises:
        ValueError: ``target`` has attributes ``source`` lacks.

    Examples:
        >>> import torch
        >>> item = {"image": torch.zeros(3, 64, 32), "pid": 0, "camid": 0, "attributes": torch.ones(26)}
        >>> ProjectedLabels([item], "market1501", "shared")[0]["attributes"].shape
        torch.Size([18])
    """

    def __init__(self, items: Sequence[dict[str, Any]] | Dataset,
                 source: str | AttributeSchema, target: str | AttributeSchema) -> None:
        self.items = items
        self.source = get_schema(source)
        self.schema = get_schema(target)
        missing = [n for n in self.schema.names if n not in self.source]
        if missing:
            raise ValueError(f"target: schema {self.schema.name!r} has attributes {missing} that "
                             f"{self.source.name!r} lacks")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.items[i])
        item["attributes"] = project_labels(item["attributes"], self.source, self.schema)
        return item


def pk_loader(items: Sequence[dict[str, Any]] | Dataset, p: int, k: int, seed: int) -> DataLoader:
    """A DataLoader of PK batches (``p`` identities x ``k`` images) over ``items``.

    Examples:
        >>> import torch
        >>> items = [{"image": torch.zeros(3, 8, 4), "pid": i // 2, "camid": 0,
        ...           "attributes": torch.zeros(2)} for i in range(8)]
        >>> next(iter(pk_loader(items, p=2, k=2, seed=0)))["image"].shape
        torch.Size([4, 3, 8, 4])
    """
    pids = [int(items[i]["pid"]) for i in range(len(items))]
    return DataLoader(items, batch_sampler=PKSampler(pids, p=p, k=k, seed=seed))


def eval_loader(items: Sequence[dict[str, Any]] | Dataset, batch_size: int = 64) -> DataLoader:
    """A DataLoader over ``items`` in order (for evaluation).

    Examples:
        >>> import torch
        >>> items = [{"image": torch.zeros(3, 8, 4), "pid": 0, "camid": 0, "attributes": torch.zeros(2)}]
        >>> len(eval_loader(items))
        1
    """
    return DataLoader(items, batch_size=batch_size, shuffle=False)


def stack_images(items: Sequence[dict[str, Any]]) -> torch.Tensor:
    """``(N,3,H,W)`` images of a list of items.

    Examples:
        >>> import torch
        >>> stack_images([{"image": torch.zeros(3, 8, 4)}] * 2).shape
        torch.Size([2, 3, 8, 4])
    """
    return torch.stack([it["image"] for it in items])


@dataclass
class BenchmarkData:
    """The datasets and rendered items of one run.

    Attributes:
        schema: The Market-1501 schema of the synthetic market domain.
        amd_train: Rendered items the interpreters are fitted on.
        query, gallery: Rendered test query/gallery items (market domain).
        query_set, gallery_set: The same test images as datasets with masks and counterfactuals.
        val_query, val_gallery: Rendered validation items (fresh identities, neither training nor test).
        duke_query, duke_gallery: Rendered test items of the synthetic duke domain.
        duke_schema: The DukeMTMC schema.
    """

    schema: AttributeSchema
    amd_train: list[dict[str, Any]]
    query: list[dict[str, Any]]
    gallery: list[dict[str, Any]]
    query_set: SyntheticPersons
    gallery_set: SyntheticPersons
    val_query: list[dict[str, Any]]
    val_gallery: list[dict[str, Any]]
    duke_query: list[dict[str, Any]]
    duke_gallery: list[dict[str, Any]]
    duke_schema: AttributeSchema

    def counts(self) -> dict[str, int]:
        """Number of images of every split (for the results file)."""
        names = ("amd_train", "query", "gallery", "val_query", "val_gallery", "duke_query", "duke_gallery")
        out = {name: len(getattr(self, name)) for name in names}
        out["amd_train_ids"] = len({int(it["pid"]) for it in self.amd_train})
        out["val_ids"] = len({int(it["pid"]) for it in self.val_query})
        out["test_ids"] = len({int(it["pid"]) for it in self.query})
        return out


def prepare_data(size: BenchmarkSize, progress: bool = False) -> BenchmarkData:
    """Build and render every split the benchmark uses.

    Every draw of :func:`~reidexplain.data.synthetic_splits` is seeded by (seed, domain, pid, image), so
    the interpreters' training set is exactly the first ``amd_train_ids`` training identities of the
    reference data. The validation split of the re-weighting (AMD-SPEC section 7) is made of
    ``val_ids`` *fresh* identities, numbered after the training and test ones: the reference model was
    trained on every training identity, so held-out training identities would not be held out from
    the model (it ranks them almost perfectly, and any ``alpha`` looks alike), and the test set is
    never used to choose ``alpha``.

    Args:
        size: The benchmark size.
        progress: Show rendering progress bars.

    Returns:
        A :class:`BenchmarkData`.

    Raises:
        ValueError: ``amd_train_ids`` exceeds the training identities or is below 2.

    Examples:
        >>> from reidbench import get_size
        >>> data = prepare_data(get_size("tiny"))
        >>> data.counts()["val_ids"], data.schema.name
        (4, 'market1501')
    """
    overrides = size.data_overrides()
    num_train = int(overrides.get("num_train_ids", REFERENCE_CONFIG["num_train_ids"]))
    per_id = int(overrides.get("images_per_id", REFERENCE_CONFIG["images_per_id"]))
    image_size = tuple(overrides.get("image_size", REFERENCE_CONFIG["image_size"]))
    seed = int(REFERENCE_CONFIG["seed"])
    num_test = int(overrides.get("num_test_ids", REFERENCE_CONFIG["num_test_ids"]))
    amd_ids = size.amd_train_ids if size.amd_train_ids is not None else num_train
    if not 2 <= amd_ids <= num_train:
        raise ValueError(f"size: amd_train_ids ({amd_ids}) must be between 2 and the {num_train} training "
                         "identities")
    market = reference_splits("market", with_masks=False, **overrides)
    masked = reference_splits("market", with_masks=True, **overrides)
    duke = reference_splits("duke", with_masks=False, **overrides)
    amd_train = synthetic_splits(amd_ids, 1, per_id, domain="market", seed=seed, image_size=image_size,
                                 with_masks=False)["train"]
    # Fresh identities after the training and test ones (see the docstring).
    val = synthetic_splits(num_train + num_test, size.val_ids, per_id, domain="market", seed=seed,
                           image_size=image_size, with_masks=False)

    def render(dataset: Dataset, desc: str) -> list[dict[str, Any]]:
        return materialise(dataset, desc, progress)

    return BenchmarkData(
        schema=market["query"].schema,
        amd_train=render(amd_train, "render train"),
        query=render(market["query"], "render query"),
        gallery=render(market["gallery"], "render gallery"),
        query_set=masked["query"],
        gallery_set=masked["gallery"],
        val_query=render(val["query"], "render val query"),
        val_gallery=render(val["gallery"], "render val gallery"),
        duke_query=render(duke["query"], "render duke query"),
        duke_gallery=render(duke["gallery"], "render duke gallery"),
        duke_schema=duke["query"].schema,
    )
