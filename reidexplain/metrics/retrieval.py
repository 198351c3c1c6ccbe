"""Standard ReID retrieval evaluation (CMC Rank-k and mAP, Market-1501 protocol) and feature extraction.

Examples:
    >>> import torch
    >>> distmat = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]])
    >>> scores = evaluate_retrieval(distmat, [1, 2], [1, 2, 1], [0, 0], [1, 1, 1], ranks=(1,))
    >>> scores["rank1"], round(scores["mAP"], 2)
    (100.0, 100.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._batch import item_field, unpack_batch
from .._progress import progress_bar

__all__ = ["evaluate_retrieval", "extract_features"]

# Rows of the distance matrix handled at once: bounds the (rows, G) temporaries to a few tens of MB.
_CELLS_PER_CHUNK = 1 << 22


def _as_array(x: Any, name: str, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}`: expected a tensor, array or sequence, got {type(x).__name__}") from err
    if arr.ndim != ndim:
        shape = "(Q,G)" if ndim == 2 else "(N,)"
        raise ValueError(f"`{name}`: expected {ndim}-D of shape {shape}, got shape {arr.shape}")
    return arr


def _check_ids(x: Any, name: str, length: int, axis: str) -> np.ndarray:
    arr = _as_array(x, name, 1)
    if arr.shape[0] != length:
        raise ValueError(f"`{name}`: expected {length} entries (the distmat's {axis}), got {arr.shape[0]}")
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        raise ValueError(f"`{name}`: expected integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_ranks(ranks: Iterable[int]) -> tuple[int, ...]:
    ranks = tuple(ranks)
    if not ranks or any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1 for r in ranks):
        raise ValueError(f"`ranks`: expected a non-empty sequence of ints >= 1, got {ranks}")
    return tuple(int(r) for r in ranks)


def _evaluate_rows(
    dist: np.ndarray, qp: np.ndarray, gp: np.ndarray, qc: np.ndarray, gc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First-match rank (``G`` if none) and AP (``nan`` if no valid match) of each query row."""
    g = dist.shape[1]
    order = np.argsort(dist, axis=1, kind="stable")
    same_pid = gp[order] == qp[:, None]
    valid = ~(same_pid & (gc[order] == qc[:, None]))
    matches = same_pid & valid
    # Rank of every gallery entry once the ignored (same pid, same camera) entries are removed.
    position = np.cumsum(valid, axis=1) - 1
    first = np.where(matches, position, g).min(axis=1)
    hits = np.cumsum(matches, axis=1)
    num_matches = hits[:, -1] if g else np.zeros(len(qp), dtype=np.int64)
    precision_sum = np.where(matches, hits / np.maximum(position + 1.0, 1.0), 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(num_matches > 0, precision_sum / num_matches, np.nan)
    return first, ap


def evaluate_retrieval(
    distmat: torch.Tensor | np.ndarray,
    query_pids: Sequence[int] | torch.Tensor | np.ndarray,
    gallery_pids: Sequence[int] | torch.Tensor | np.ndarray,
    query_camids: Sequence[int] | torch.Tensor | np.ndarray,
    gallery_camids: Sequence[int] | torch.Tensor | np.ndarray,
    ranks: Iterable[int] = (1, 5, 10),
) -> dict[str, float]:
    """CMC Rank-k and mAP (in percent) of a query x gallery distance matrix, Market-1501 protocol.

    For each query, gallery entries with the query's pid **and** camera are ignored (the same person
    seen by the same camera is too easy); queries left without any valid match are skipped. The
    gallery is sorted by increasing distance with a stable sort, so ties keep the gallery order. AP is
    the mean of the precisions at the ranks of the valid matches (the torchreid/fastreid definition).

    Args:
        distmat: ``(Q,G)`` distances, smaller is more similar (tensor or array).
        query_pids: ``(Q,)`` integer identities of the queries.
        gallery_pids: ``(G,)`` integer identities of the gallery.
        query_camids: ``(Q,)`` camera ids of the queries.
        gallery_camids: ``(G,)`` camera ids of the gallery.
        ranks: The ``k`` of the reported Rank-k values.

    Returns:
        ``{"rank1": ..., "rank5": ..., "rank10": ..., "mAP": ...}`` in percent (one ``rank{k}`` per
        entry of ``ranks``). All values are ``nan`` if no query has a valid match (with a warning).

    Raises:
        ValueError: shapes that do not match, NaN distances, non-integer ids or invalid ``ranks``.
        TypeError: an argument that is not a tensor, array or sequence.

    Examples:
        >>> import numpy as np
        >>> d = np.array([[0.3, 0.1, 0.2]])
        >>> evaluate_retrieval(d, [5], [5, 6, 5], [0], [1, 1, 0], ranks=(1, 2))
        {'rank1': 0.0, 'rank2': 100.0, 'mAP': 50.0}
    """
    dist = _as_array(distmat, "distmat", 2).astype(np.float64, copy=False)
    q, g = dist.shape
    if np.isnan(dist).any():
        raise ValueError("`distmat`: contains NaN values")
    qp = _check_ids(query_pids, "query_pids", q, "rows")
    gp = _check_ids(gallery_pids, "gallery_pids", g, "columns")
    qc = _check_ids(query_camids, "query_camids", q, "rows")
    gc = _check_ids(gallery_camids, "gallery_camids", g, "columns")
    ranks = _check_ranks(ranks)

    firsts, aps = [], []
    rows = max(1, _CELLS_PER_CHUNK // max(g, 1))
    for start in range(0, q, rows):
        stop = start + rows
        first, ap = _evaluate_rows(dist[start:stop], qp[start:stop], gp, qc[start:stop], gc)
        firsts.append(first)
        aps.append(ap)
    first = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64)
    ap = np.concatenate(aps) if aps else np.zeros(0)
    evaluated = ~np.isnan(ap)
    if not evaluated.any():
        warnings.warn(
            "evaluate_retrieval: no query has a valid match in the gallery (a different camera or "
            "pid); all scores are nan",
            stacklevel=2,
        )
        return {**{f"rank{k}": float("nan") for k in ranks}, "mAP": float("nan")}
    first = first[evaluated]
    scores = {f"rank{k}": float(100.0 * np.mean(first < k)) for k in ranks}
    scores["mAP"] = float(100.0 * ap[evaluated].mean())
    return scores


def _batch_fields(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    fields = unpack_batch(batch, attributes=False, where="extract_features")
    if fields.pids is None or fields.camids is None:
        keys = f"; has {sorted(map(str, batch))}" if isinstance(batch, dict) else ""
        raise KeyError(f"extract_features: each batch needs images, 'pid' and 'camid'{keys}")
    return fields.images, fields.pids, fields.camids


def _collate_for_features(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # The per-attribute masks of synthetic items are not needed here; stacking them would dominate.
    where = "extract_features: dataset item"
    images = torch.stack([torch.as_tensor(item_field(it, "image", 0, where)) for it in items])
    pids = torch.tensor([int(item_field(it, "pid", 1, where)) for it in items])
    camids = torch.tensor([int(item_field(it, "camid", 2, where)) for it in items])
    return images, pids, camids


def extract_features(
    model: nn.Module,
    dataset_or_loader: Dataset | DataLoader,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embed every image of a dataset (or loader) with ``model``, without gradients.

    The model runs in eval mode; its ``training`` flag is restored afterwards.

    Args:
        model: Maps ``(B,3,H,W)`` images to ``(B,D)`` embeddings in eval mode.
        dataset_or_loader: A map-style dataset of dicts with ``"image"``, ``"pid"``, ``"camid"`` (or
            tuples ``(image, pid, camid, ...)``), or a DataLoader yielding such batches.
        batch_size: Batch size when a dataset is given (ignored for a loader).
        device: Where the images are sent; default: the model's device (the model is not moved).
        progress: Show a progress bar (a few plain lines when stderr is not a terminal).

    Returns:
        ``(features (N,D) float on CPU, pids (N,) int64, camids (N,) int64)``.

    Raises:
        ValueError: ``batch_size < 1``, an empty dataset, or a model that does not return ``(B,D)``.
        TypeError: batches that are neither dicts nor tuples.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> data = [(torch.rand(3, 8, 4), i // 2, i % 2) for i in range(6)]
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(96, 5))
        >>> feats, pids, camids = extract_features(model, data, batch_size=4)
        >>> feats.shape, pids.tolist()
        (torch.Size([6, 5]), [0, 0, 1, 1, 2, 2])
    """
    if isinstance(dataset_or_loader, DataLoader):
        loader: Iterable[Any] = dataset_or_loader
    else:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"extract_features: `batch_size` must be an int >= 1, got {batch_size!r}")
        loader = DataLoader(
            dataset_or_loader, batch_size=batch_size, shuffle=False, collate_fn=_collate_for_features
        )
    if device is None:
        tensors = [*model.parameters(), *model.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
    was_training = model.training
    features, pids, camids = [], [], []
    model.eval()
    try:
        with torch.no_grad():
            for batch in progress_bar(loader, desc="extract features", enabled=progress, leave=False):
                images, batch_pids, batch_camids = _batch_fields(batch)
                out = model(images.to(device))
                if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(images):
                    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise ValueError(
                        f"extract_features: the model must return (B,D) embeddings, got {shape} for "
                        f"B={len(images)}"
                    )
                features.append(out.float().cpu())
                pids.append(batch_pids.cpu())
                camids.append(batch_camids.cpu())
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("extract_features: `dataset_or_loader` yielded no images")
    return torch.cat(features), torch.cat(pids), torch.cat(camids)
