"""Query x gallery scoring for :meth:`reidexplain.Explainer.evaluate` (private).

Per-image quantities (target embedding, component embeddings ``e_k``) are computed once; every pairwise
quantity then follows from ``distance_matrix`` per attribute, in chunks of queries so that the
``(Q,G,M)`` tensor never has to exist at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .._batch import iter_batches
from .._progress import progress_bar
from ..distance import distance_matrix
from ..metrics.explanation import adre, x_map_common, x_map_exclusive
from .network import AMDInterpreter, component_embeddings
from .split import TargetSplit

__all__ = ["MatrixExplanation", "component_distance_matrices", "embed_loader", "score_query_gallery", "retrieval_scores"]

_PAIR_BUDGET = 4_000_000  # elements of a (chunk, G, M) block


@dataclass
class MatrixExplanation:
    """AMD quantities for every query x gallery pair.

    Attributes:
        distance: ``(Q,G)`` target distances.
        reconstructed: ``(Q,G)`` interpreter distances ``d_hat``.
        contributions: ``(Q,G,M)`` per-attribute contributions ``c_k = d_k / M`` (sum: ``d_hat``).
        attribute_names: The ``M`` names.

    Examples:
        >>> import torch
        >>> m = MatrixExplanation(torch.ones(1, 2), torch.ones(1, 2), torch.full((1, 2, 4), 0.25), ("a",) * 4)
        >>> m.shares.sum(-1)
        tensor([[1., 1.]])
    """

    distance: torch.Tensor
    reconstructed: torch.Tensor
    contributions: torch.Tensor
    attribute_names: tuple[str, ...]

    @property
    def shares(self) -> torch.Tensor:
        """``(Q,G,M)`` shares of ``d_hat`` per attribute; they sum to 1 over ``M``."""
        return self.contributions / self.contributions.sum(-1, keepdim=True).clamp_min(1e-12)


def component_distance_matrices(q_emb: torch.Tensor, q_comp: torch.Tensor, g_emb: torch.Tensor,
                                g_comp: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Target distances ``(Q,G)`` and component distances ``(Q,G,M)`` from per-image embeddings."""
    d = distance_matrix(q_emb, g_emb, metric)
    dk = torch.stack([distance_matrix(q_comp[:, k], g_comp[:, k], metric) for k in range(q_comp.shape[1])],
                     dim=-1)
    return d, dk


def _fingerprint(images: torch.Tensor) -> torch.Tensor:
    """Two fixed random projections of each image: equal for identical images, distinct otherwise."""
    flat = images.flatten(1).double()
    gen = torch.Generator().manual_seed(1234)
    proj = torch.rand(flat.shape[1], 2, generator=gen, dtype=torch.float64).to(flat.device)
    return flat @ proj


def embed_loader(split: TargetSplit, interpreter: AMDInterpreter, loader: Iterable, num_attributes: int,
                 progress: bool = False, desc: str = "embedding") -> dict[str, Any]:
    """Embeddings, component embeddings, labels, ids and image fingerprints of every image of ``loader``."""
    out: dict[str, list] = {"embeddings": [], "components": [], "attributes": [], "known": [], "pids": [],
                            "camids": [], "fingerprints": []}
    has_pids = has_camids = True
    interpreter.eval()
    with torch.no_grad():
        for batch in progress_bar(iter_batches(loader, num_attributes), desc=desc, enabled=progress, leave=False):
            images = batch.images.to(split.device)
            comps = component_embeddings(split, interpreter, images)
            out["embeddings"].append(comps.embeddings.cpu())
            out["components"].append(comps.components.cpu())
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
    result: dict[str, Any] = {k: torch.cat(v) for k, v in out.items() if k not in ("pids", "camids")}
    result["pids"] = torch.cat(out["pids"]) if has_pids else None
    result["camids"] = torch.cat(out["camids"]) if has_camids else None
    return result


def score_query_gallery(query: dict[str, Any], gallery: dict[str, Any], metric: str,
                        progress: bool = False) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Explanation metrics over all query x gallery pairs except an image with itself.

    Labels unknown in either image of a pair (``"known"`` of :func:`embed_loader`) are left out of
    that pair's X-mAPs.

    Returns:
        ``({"x_map_e", "x_map_c", "adre", "num_pairs"}, target distances (Q,G), d_hat (Q,G))``.
    """
    q_total, g_total = query["embeddings"].shape[0], gallery["embeddings"].shape[0]
    m = query["components"].shape[1]
    chunk = max(1, _PAIR_BUDGET // max(1, g_total * m))
    sums = {"x_map_e": 0.0, "x_map_c": 0.0, "adre": 0.0}
    counts = dict.fromkeys(sums, 0)
    dist_rows, recon_rows = [], []
    pairs = 0
    for start in progress_bar(range(0, q_total, chunk), desc="scoring", enabled=progress, leave=False):
        sl = slice(start, start + chunk)
        d, dk = component_distance_matrices(query["embeddings"][sl], query["components"][sl],
                                            gallery["embeddings"], gallery["components"], metric)
        d_hat = dk.mean(dim=-1)
        shares = dk / dk.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        exclusive = query["attributes"][sl, None, :] != gallery["attributes"][None, :, :]
        known = None
        if "known" in query and "known" in gallery and not (query["known"].all() and gallery["known"].all()):
            known = query["known"][sl, None, :] & gallery["known"][None, :, :]
        same = (query["fingerprints"][sl, None, :] == gallery["fingerprints"][None, :, :]).all(dim=-1)
        valid = ~same
        pairs += int(valid.sum())
        for key, values in (("x_map_e", x_map_exclusive(shares, exclusive, valid, "none", known)),
                            ("x_map_c", x_map_common(shares, exclusive, valid, "none", known)),
                            ("adre", adre(d, d_hat, valid, reduction="none"))):
            keep = ~torch.isnan(values)
            sums[key] += float(values[keep].sum())
            counts[key] += int(keep.sum())
        dist_rows.append(d)
        recon_rows.append(d_hat)
    scores = {k: (sums[k] / counts[k] if counts[k] else float("nan")) for k in sums}
    scores["num_pairs"] = float(pairs)
    return scores, torch.cat(dist_rows), torch.cat(recon_rows)


def _camids_without_cameras(query: dict[str, Any], gallery: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera ids that make the retrieval protocol ignore only an image matched with itself."""
    q = torch.arange(query["embeddings"].shape[0])
    g = torch.full((gallery["embeddings"].shape[0],), -1, dtype=torch.long)
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
