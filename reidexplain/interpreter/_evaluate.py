"""Query x gallery scoring for :meth:`reidexplain.Explainer.evaluate` (private).

Per-image quantities (target embedding, component embeddings ``e_k``) are computed once; every pairwise
quantity then follows from ``distance_matrix`` per attribute, in chunks of queries so that the
``(Q,G,M)`` tensor never has to exist at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from ..distance import distance_matrix
from ..metrics.explanation import adre, x_map_common, x_map_exclusive
from ._batch import iter_batches
from .network import AMDInterpreter, component_embeddings
from .split import TargetSplit

__all__ = ["component_distance_matrices", "embed_loader", "score_query_gallery"]

_PAIR_BUDGET = 4_000_000  # elements of a (chunk, G, M) block


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
    out: dict[str, list] = {"embeddings": [], "components": [], "attributes": [], "pids": [], "camids": [],
                            "fingerprints": []}
    has_pids = has_camids = True
    interpreter.eval()
    with torch.no_grad():
        for batch in tqdm(iter_batches(loader, num_attributes), desc=desc, disable=not progress, leave=False):
            images = batch.images.to(split.device)
            comps = component_embeddings(split, interpreter, images)
            out["embeddings"].append(comps.embeddings.cpu())
            out["components"].append(comps.components.cpu())
            out["attributes"].append(batch.attributes.bool())
            out["fingerprints"].append(_fingerprint(batch.images))
            has_pids &= batch.pids is not None
            has_camids &= batch.camids is not None
            if batch.pids is not None:
                out["pids"].append(batch.pids)
            if batch.camids is not None:
                out["camids"].append(batch.camids)
    result: dict[str, Any] = {k: torch.cat(v) for k, v in out.items() if k not in ("pids", "camids")}
    result["pids"] = torch.cat(out["pids"]) if has_pids else None
    result["camids"] = torch.cat(out["camids"]) if has_camids else None
    return result


def score_query_gallery(query: dict[str, Any], gallery: dict[str, Any], metric: str,
                        progress: bool = False) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Explanation metrics over all query x gallery pairs except an image with itself.

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
    for start in tqdm(range(0, q_total, chunk), desc="scoring", disable=not progress, leave=False):
        sl = slice(start, start + chunk)
        d, dk = component_distance_matrices(query["embeddings"][sl], query["components"][sl],
                                            gallery["embeddings"], gallery["components"], metric)
        d_hat = dk.mean(dim=-1)
        shares = dk / dk.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        exclusive = query["attributes"][sl, None, :] != gallery["attributes"][None, :, :]
        same = (query["fingerprints"][sl, None, :] == gallery["fingerprints"][None, :, :]).all(dim=-1)
        valid = ~same
        pairs += int(valid.sum())
        for key, values in (("x_map_e", x_map_exclusive(shares, exclusive, valid, reduction="none")),
                            ("x_map_c", x_map_common(shares, exclusive, valid, reduction="none")),
                            ("adre", adre(d, d_hat, valid, reduction="none"))):
            keep = ~torch.isnan(values)
            sums[key] += float(values[keep].sum())
            counts[key] += int(keep.sum())
        dist_rows.append(d)
        recon_rows.append(d_hat)
    scores = {k: (sums[k] / counts[k] if counts[k] else float("nan")) for k in sums}
    scores["num_pairs"] = float(pairs)
    return scores, torch.cat(dist_rows), torch.cat(recon_rows)
