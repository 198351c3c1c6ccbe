"""Gallery indexes: a gallery's per-image AMD quantities, computed once, saved and reloaded without the images.

Also :func:`model_fingerprint` (what an index's components depend on) and the checks of identity and
camera labels the rankings share.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..distance import check_metric
from ._collectives import _process_group, shard_bounds

__all__ = ["INDEX_FORMAT", "INDEX_FORMAT_VERSION", "SHARD_FORMAT_VERSION", "LINEAR_FORMAT_VERSIONS",
           "GalleryIndex", "model_fingerprint"]

INDEX_FORMAT = "reidexplain.GalleryIndex"
"""The ``"format"`` tag of a :class:`GalleryIndex` file."""
INDEX_FORMAT_VERSION = 1
"""Version of the files :meth:`GalleryIndex.save` writes for a whole gallery."""
SHARD_FORMAT_VERSION = 2
"""Version of the files :meth:`GalleryIndex.save` writes for a shard (version 1 plus its ``offset`` and
the whole gallery's ``total``), so that a reader of version 1 refuses a shard instead of taking it for a
whole gallery."""
LINEAR_FORMAT_VERSIONS = (3, 4)
"""Versions of a whole gallery and of a shard whose index holds the rest-of-image parts of the linear
rule (versions 1 and 2 plus ``"rest"``), so that a reader of versions 1 and 2, which knows no rest and
would rank with AMD's rule, refuses them."""

# ---------------------------------------------------------------------------------------- fingerprints
def model_fingerprint(amd: Any) -> str:
    """A hash of what a gallery's components depend on: the target's and the interpreter's weights.

    Args:
        amd: A fitted :class:`~reidexplain.interpreter.AMDModel`.

    Returns:
        A hexadecimal SHA-1 of the names, shapes and values of the target copy's and the interpreter
        network's parameters and buffers, and of the metric and attribute names.
    """
    h = hashlib.sha1()
    h.update(f"{amd.metric};{','.join(amd.schema.names)};".encode())
    for prefix, module in (("target", amd.adapter.target), ("network", amd.network)):
        for name, t in module.state_dict().items():
            h.update(f"{prefix}.{name}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes() if t.dtype != torch.bfloat16
                     else t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _as_ids(x: Any, name: str, length: int) -> torch.Tensor | None:
    if x is None:
        return None
    t = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x))
    if t.dim() != 1 or t.shape[0] != length:
        raise ValueError(f"`{name}`: expected {length} entries, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"`{name}`: expected integer ids, got dtype {t.dtype}")
    return t.long()


# ---------------------------------------------------------------------------------------- gallery index
@dataclass
class GalleryIndex:
    """A gallery's per-image AMD quantities, computed once; saved and reloaded without the images.

    Build one with :meth:`reidexplain.Explainer.index_gallery`; rank queries against it with
    :meth:`reidexplain.Explainer.explain_ranking`.

    Attributes:
        embeddings: ``(G,D)`` the target's embeddings.
        components: ``(G,M,D')`` component embeddings.
        maps: ``(G,M,h,w)`` low-resolution attribute maps, or ``None`` (not stored, to bound the size).
        ids: ``(G,)`` identities, or ``None``.
        camids: ``(G,)`` cameras, or ``None``.
        attribute_names: The ``M`` names.
        metric: The target's distance.
        fingerprint: :func:`model_fingerprint` of the model that computed it.
        image_size: ``(H, W)`` of the gallery images.
        offset: Global index of the first entry: ``0`` for a whole gallery; for a shard (one process's
            contiguous part of a gallery, see :meth:`shard`) the position of its first image in the
            whole gallery. Rankings name gallery images by ``offset + local row``.
        total: Size of the whole gallery (default ``offset + len(self)``).
        rest: ``(G,D)`` the rest-of-image parts of the embeddings, for an interpreter that decomposes
            distances linearly (``amd-subspace``, ``amd-linear``: ``components`` are then the attributes' parts
            ``u_k``, see :class:`~reidexplain.interpreter.Components`), else ``None``. With it, rankings
            use the linear rule (:func:`~reidexplain.decomposition.linear_pair_decomposition`), not AMD's.

    Examples:
        >>> import torch
        >>> index = GalleryIndex(torch.rand(5, 4), torch.rand(5, 2, 4), None, None, None, ("a", "b"),
        ...                      "euclidean", "f00", (8, 4))
        >>> len(index), index.has_maps
        (5, False)
    """

    embeddings: torch.Tensor
    components: torch.Tensor
    maps: torch.Tensor | None
    ids: torch.Tensor | None
    camids: torch.Tensor | None
    attribute_names: tuple[str, ...]
    metric: str
    fingerprint: str
    image_size: tuple[int, int]
    offset: int = 0
    total: int | None = None
    rest: torch.Tensor | None = None

    def __post_init__(self) -> None:
        g = self.embeddings.shape[0]
        if self.embeddings.dim() != 2 or self.components.dim() != 3 or self.components.shape[0] != g:
            raise ValueError(f"GalleryIndex: expected (G,D) embeddings and (G,M,D') components, got "
                             f"{tuple(self.embeddings.shape)} and {tuple(self.components.shape)}")
        self.attribute_names = tuple(self.attribute_names)
        if self.components.shape[1] != len(self.attribute_names):
            raise ValueError(f"GalleryIndex: {self.components.shape[1]} components per image but "
                             f"{len(self.attribute_names)} attribute names")
        if self.maps is not None and tuple(self.maps.shape[:2]) != tuple(self.components.shape[:2]):
            raise ValueError(f"GalleryIndex: maps of shape {tuple(self.maps.shape)} for {g} images x "
                             f"{self.components.shape[1]} attributes")
        # The linear rule adds parts of the embedding: the rest and the u_k live in its (G,D) space.
        if self.rest is not None and (tuple(self.rest.shape) != tuple(self.embeddings.shape)
                                      or self.components.shape[2] != self.embeddings.shape[1]):
            raise ValueError(f"GalleryIndex: a rest of shape {tuple(self.rest.shape)} and components of shape "
                             f"{tuple(self.components.shape)} for embeddings of shape "
                             f"{tuple(self.embeddings.shape)} (the linear decomposition's parts are (G,D) "
                             "and (G,M,D))")
        self.ids = _as_ids(self.ids, "ids", g)
        self.camids = _as_ids(self.camids, "camids", g)
        self.metric = check_metric(self.metric)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.offset = int(self.offset)
        self.total = g + self.offset if self.total is None else int(self.total)
        if self.offset < 0 or self.total < self.offset + g:
            raise ValueError(f"GalleryIndex: {g} entries from offset {self.offset} do not fit a gallery of "
                             f"{self.total}")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def has_maps(self) -> bool:
        """Whether the low-resolution maps are stored."""
        return self.maps is not None

    @property
    def linear(self) -> bool:
        """Whether the index holds the rest-of-image parts the linear decomposition needs."""
        return self.rest is not None

    @property
    def is_shard(self) -> bool:
        """Whether this is a part of a larger gallery (``offset > 0`` or ``total > len``)."""
        return self.offset != 0 or self.total != len(self)

    def shard(self, rank: int | None = None, world: int | None = None) -> GalleryIndex:
        """This process's contiguous part of the gallery (:func:`shard_bounds`), with its global offset.

        Under ``torchrun``, every process keeps only its part of the gallery; ranking against the parts
        with :meth:`reidexplain.Explainer.explain_ranking` merges the processes' top-k into the top-k
        of the whole gallery (:func:`explain_topk_sharded`).

        Args:
            rank: This process's rank (default: the process group's, else 0).
            world: The number of processes (default: the process group's, else 1).

        Returns:
            A :class:`GalleryIndex` that shares the tensors' storage (slices, no copies), with
            :attr:`offset` and :attr:`total` set.

        Raises:
            ValueError: the index is already a shard, has fewer entries than ``world``, or ``rank`` is
                not in ``[0, world)``.

        Examples:
            >>> import torch
            >>> index = GalleryIndex(torch.rand(5, 4), torch.rand(5, 2, 4), None, torch.arange(5), None,
            ...                      ("a", "b"), "euclidean", "f00", (8, 4))
            >>> part = index.shard(rank=1, world=2)
            >>> len(part), part.offset, part.total, part.ids.tolist(), part.is_shard
            (3, 2, 5, [2, 3, 4], True)
        """
        if self.is_shard:
            raise ValueError(f"shard: this index is already a shard (entries {self.offset}.."
                             f"{self.offset + len(self) - 1} of {self.total})")
        group_world, group_rank = _process_group()
        world = group_world if world is None else int(world)
        rank = group_rank if rank is None else int(rank)
        if len(self) < world:
            raise ValueError(f"shard: a gallery of {len(self)} entries cannot be cut into {world} non-empty shards")
        start, stop = shard_bounds(len(self), rank, world)
        cut = (lambda t: None if t is None else t[start:stop])  # noqa: E731
        return GalleryIndex(cut(self.embeddings), cut(self.components), cut(self.maps), cut(self.ids),
                            cut(self.camids), self.attribute_names, self.metric, self.fingerprint,
                            self.image_size, offset=start, total=len(self), rest=cut(self.rest))

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's tensors."""
        return sum(t.numel() * t.element_size() for t in (self.embeddings, self.components, self.maps,
                                                           self.ids, self.camids, self.rest) if t is not None)

    def to(self, device: torch.device | str) -> GalleryIndex:
        """A copy on ``device``."""
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return GalleryIndex(move(self.embeddings), move(self.components), move(self.maps), self.ids,
                            self.camids, self.attribute_names, self.metric, self.fingerprint, self.image_size,
                            offset=self.offset, total=self.total, rest=move(self.rest))

    def save(self, path: str | Path) -> None:
        """Write the index to one file: ``torch.save`` of plain tensors, loadable with ``weights_only=True``.

        A whole gallery is written as format version :data:`INDEX_FORMAT_VERSION`; a shard as
        :data:`SHARD_FORMAT_VERSION`, with its offset and the gallery's size; an index with the rest of
        the linear rule as :data:`LINEAR_FORMAT_VERSIONS` (whole, shard). Every process writes what it
        holds: under ``torchrun``, give each rank its own path (``f"gallery.{rank}.pt"``) and load each
        shard on its own rank. The rest-of-image parts of a linear index are written under ``"rest"``
        (``None`` otherwise); files written before there was a rest still load, without one.

        Examples:
            >>> import tempfile, torch
            >>> index = GalleryIndex(torch.rand(3, 4), torch.rand(3, 2, 4), torch.rand(3, 2, 2, 1),
            ...                      torch.tensor([1, 1, 2]), None, ("a", "b"), "cosine", "f00", (8, 4))
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     index.save(f"{tmp}/gallery.pt")
            ...     again = GalleryIndex.load(f"{tmp}/gallery.pt")
            >>> torch.equal(again.components, index.components), again.ids.tolist(), again.camids
            (True, [1, 1, 2], None)
        """
        cpu = (lambda t: None if t is None else t.detach().cpu().contiguous())  # noqa: E731
        data = {
            "format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION,
            "attribute_names": list(self.attribute_names), "metric": self.metric,
            "fingerprint": self.fingerprint, "image_size": list(self.image_size),
            "embeddings": cpu(self.embeddings), "components": cpu(self.components), "maps": cpu(self.maps),
            "ids": cpu(self.ids), "camids": cpu(self.camids), "rest": cpu(self.rest),
        }
        if self.is_shard:
            data.update(format_version=SHARD_FORMAT_VERSION, offset=self.offset, total=self.total)
        if self.rest is not None:
            data["format_version"] = LINEAR_FORMAT_VERSIONS[int(self.is_shard)]
        torch.save(data, Path(path))

    @classmethod
    def load(cls, path: str | Path, explainer: Any = None, map_location: str | torch.device = "cpu") -> GalleryIndex:
        """Read a file written by :meth:`save`; with ``explainer``, check that it computed the index.

        Args:
            path: The file.
            explainer: A fitted :class:`~reidexplain.Explainer`; its schema and :func:`model_fingerprint`
                must match the file's (an index of another model would rank with the wrong components).
            map_location: Where the tensors go.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a gallery index file, another format version, or another schema or model
                than ``explainer``'s, or an index without the rest-of-image parts for an explainer that
                decomposes linearly (see :meth:`check_compatible`).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: no such file {str(path)!r}")
        try:
            data = torch.load(path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            raise ValueError(f"path: {str(path)!r} is not a gallery index written by GalleryIndex.save "
                             f"({err})") from None
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            raise ValueError(f"path: {str(path)!r} is not a gallery index written by GalleryIndex.save")
        version = data.get("format_version")
        known = (INDEX_FORMAT_VERSION, SHARD_FORMAT_VERSION, *LINEAR_FORMAT_VERSIONS)
        if version not in known:
            raise ValueError(f"path: {str(path)!r} has gallery index format version {version!r}; this "
                             f"reidexplain reads versions {', '.join(map(str, known))}")
        if (version in LINEAR_FORMAT_VERSIONS) != (data.get("rest") is not None):
            raise ValueError(f"path: {str(path)!r} is damaged: format version {version} "
                             f"{'needs' if version in LINEAR_FORMAT_VERSIONS else 'has no'} rest-of-image parts")
        is_shard = version in (SHARD_FORMAT_VERSION, LINEAR_FORMAT_VERSIONS[1])
        shard = {"offset": data["offset"], "total": data["total"]} if is_shard else {}
        index = cls(data["embeddings"], data["components"], data["maps"], data["ids"], data["camids"],
                    tuple(data["attribute_names"]), data["metric"], data["fingerprint"], tuple(data["image_size"]),
                    rest=data.get("rest"), **shard)  # older files have no "rest"
        if explainer is not None:
            index.check_compatible(explainer)
        return index

    def check_compatible(self, explainer: Any) -> None:
        """Raise ``ValueError`` unless ``explainer`` (fitted) computed this index (same schema and model).

        An explainer that decomposes distances linearly (``amd-subspace``, ``amd-linear``) also needs the index's
        :attr:`rest`: an index of its model written without it (before reidexplain kept it) would be
        ranked with AMD's rule on the parts ``u_k``, which is wrong for them.
        """
        amd = explainer._require_fitted("explain_ranking")
        if tuple(amd.schema.names) != self.attribute_names:
            raise ValueError(f"gallery index: its schema ({len(self.attribute_names)} attributes: "
                             f"{', '.join(self.attribute_names[:4])}, ...) differs from the explainer's "
                             f"({len(amd.schema)} attributes: {', '.join(amd.schema.names[:4])}, ...)")
        if amd.metric != self.metric:
            raise ValueError(f"gallery index: metric {self.metric!r}, the explainer's is {amd.metric!r}")
        fingerprint = model_fingerprint(amd)
        if fingerprint != self.fingerprint:
            raise ValueError(f"gallery index: model fingerprint {self.fingerprint[:12]} differs from the "
                             f"explainer's {fingerprint[:12]}: the index was computed by another target model "
                             "or interpreter; rebuild it with explainer.index_gallery(images)")
        linear = bool(amd.linear)
        if linear and not self.linear:
            raise ValueError("gallery index: it holds no rest-of-image parts, which the explainer's linear "
                             "decomposition (amd-subspace, amd-linear) needs (an index written before reidexplain "
                             "kept them); rebuild it with explainer.index_gallery(images)")
        if self.linear and not linear:
            raise ValueError("gallery index: it holds the rest-of-image parts of a linear decomposition "
                             "(amd-subspace, amd-linear), and the explainer decomposes with AMD's rule; rebuild it "
                             "with explainer.index_gallery(images)")


def _iter_images(gallery: Any) -> Iterable[tuple[torch.Tensor, Any, Any]]:
    """``(images, ids, camids)`` per batch of a tensor or of an iterable of tensors / dicts / tuples."""
    if isinstance(gallery, torch.Tensor):
        yield gallery, None, None
        return
    for batch in gallery:
        if isinstance(batch, torch.Tensor):
            yield batch, None, None
        elif isinstance(batch, dict):
            yield batch["image"], batch.get("pid"), batch.get("camid")
        elif isinstance(batch, Sequence) and batch and isinstance(batch[0], torch.Tensor):
            yield batch[0], (batch[1] if len(batch) > 1 else None), (batch[2] if len(batch) > 2 else None)
        else:
            raise TypeError(f"gallery: expected image tensors, dicts with 'image' or tuples (images, ids, camids), "
                            f"got a batch of type {type(batch).__name__}")
