"""Query x gallery scoring for :meth:`reidexplain.Explainer.evaluate` (private).

Per-image quantities (target embedding, component embeddings ``e_k``) are computed once; every pairwise
quantity then follows from :meth:`~reidexplain.interpreter.model.AMDModel.decompose_matrix` on chunks of
queries, fed to the streaming metrics of :data:`~reidexplain.metrics.streaming.EXPLANATION_METRICS`, so
that the ``(Q,G,M)`` tensor never has to exist at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch

from .._batch import iter_batches
from .._progress import progress_bar
from ..metrics.streaming import EXPLANATION_METRICS
from .model import AMDModel, Components

__all__ = ["embed_loader", "score_query_gallery", "retrieval_scores"]

_PAIR_BUDGET = 4_000_000  # elements of a (chunk, G, M) block


def _fingerprint(images: torch.Tensor) -> torch.Tensor:
    """Two fixed random projections of each image: equal for identical images, distinct otherwise."""
    flat = images.flatten(1).double()
    gen = torch.Generator().manual_seed(1234)
    proj = torch.rand(flat.shape[1], 2, generator=gen, dtype=torch.float64).to(flat.device)
    return flat @ proj


def embed_loader(model: AMDModel, loader: Iterable, progress: bool = False,
                 desc: str = "embedding") -> dict[str, Any]:
    """Components (on the CPU), labels, ids and image fingerprints of every image of ``loader``."""
    parts: list[Components] = []
    out: dict[str, list] = {"attributes": [], "known": [], "pids": [], "camids": [], "fingerprints": []}
    has_pids = has_camids = True
    for batch in progress_bar(iter_batches(loader, model.num_attributes), desc=desc, enabled=progress,
                              leave=False):
        comps = model.embed(batch.images.to(model.device), side=model.side_from_batch(batch))
        parts.append(Components(comps.embeddings.cpu(), comps.components.cpu(), comps.maps[:, :0].cpu(), None,
                                None if comps.rest is None else comps.rest.cpu()))
        # Everything per image is gathered on the CPU, whatever device the loader yields.
        out["attributes"].append(batch.attributes.bool().cpu())
        out["known"].append(batch.known_mask().cpu())
        out["fingerprints"].append(_fingerprint(batch.images).cpu())
        has_pids &= batch.pids is not None
        has_camids &= batch.camids is not None
        if batch.pids is not None:
            out["pids"].append(batch.pids.cpu())
        if batch.camids is not None:
            out["camids"].append(batch.camids.cpu())
    result: dict[str, Any] = {"components": Components.cat(parts),
                              "attributes": torch.cat(out["attributes"]),
                              "known": torch.cat(out["known"]),
                              "fingerprints": torch.cat(out["fingerprints"])}
    result["pids"] = torch.cat(out["pids"]) if has_pids else None
    result["camids"] = torch.cat(out["camids"]) if has_camids else None
    return result


def score_query_gallery(model: AMDModel, query: dict[str, Any], gallery: dict[str, Any],
                        progress: bool = False) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Explanation metrics over all query x gallery pairs except an image with itself.

    Labels unknown in either image of a pair (``"known"`` of :func:`embed_loader`) are left out of
    that pair's X-mAPs.

    Returns:
        ``({metric name: value, ..., "num_pairs"}, target distances (Q,G), d_hat (Q,G))``.
    """
    q, g = query["components"], gallery["components"]
    q_total, g_total, m = q.embeddings.shape[0], g.embeddings.shape[0], q.components.shape[1]
    chunk = max(1, _PAIR_BUDGET // max(1, g_total * m))
    metrics = {entry.name: entry.obj() for entry in EXPLANATION_METRICS.entries()}
    dist_rows, recon_rows = [], []
    pairs = 0
    for start in progress_bar(range(0, q_total, chunk), desc="scoring", enabled=progress, leave=False):
        sl = slice(start, start + chunk)
        parts = model.decompose_matrix(q[sl], g)
        exclusive = query["attributes"][sl, None, :] != gallery["attributes"][None, :, :]
        known = None
        if "known" in query and "known" in gallery and not (query["known"].all() and gallery["known"].all()):
            known = query["known"][sl, None, :] & gallery["known"][None, :, :]
        same = (query["fingerprints"][sl, None, :] == gallery["fingerprints"][None, :, :]).all(dim=-1)
        valid = ~same
        pairs += int(valid.sum())
        inputs = {"distance": parts.distance, "reconstructed": parts.reconstructed, "shares": parts.shares,
                  "contributions": parts.contributions, "exclusive": exclusive, "valid": valid,
                  "known": known}
        for metric in metrics.values():
            metric.update(**inputs)
        dist_rows.append(parts.distance)
        recon_rows.append(parts.reconstructed)
    scores = {name: metric.compute() for name, metric in metrics.items()}
    scores["num_pairs"] = float(pairs)
    return scores, torch.cat(dist_rows), torch.cat(recon_rows)


def _camids_without_cameras(query: dict[str, Any], gallery: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera ids that make the retrieval protocol ignore only an image matched with itself."""
    q = torch.arange(query["fingerprints"].shape[0])
    g = torch.full((gallery["fingerprints"].shape[0],), -1, dtype=torch.long)
    same = (query["fingerprints"][:, None, :] == gallery["fingerprints"][None, :, :]).all(-1)
    qi, gi = same.nonzero(as_tuple=True)
    g[gi] = q[qi]
    return q, g


def retrieval_scores(query: dict[str, Any], gallery: dict[str, Any],
                     distances: dict[str, torch.Tensor]) -> dict[str, float]:
    """Rank-1, Rank-5 and mAP (percent) of each ``(Q,G)`` distance matrix, keys suffixed by its name.

    Without camids every query is treated as coming from a camera of its own, so that only an image
    matched with itself is ignored.
    """
    from ..metrics.retrieval import evaluate_retrieval

    qc, gc = query["camids"], gallery["camids"]
    if qc is None or gc is None:
        qc, gc = _camids_without_cameras(query, gallery)
    scores: dict[str, float] = {}
    for name, mat in distances.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a query without a valid match is skipped, as documented
            r = evaluate_retrieval(mat, query["pids"], gallery["pids"], qc, gc, ranks=(1, 5))
        scores.update({f"rank1_{name}": r["rank1"], f"rank5_{name}": r["rank5"], f"map_{name}": r["mAP"]})
    return scores
