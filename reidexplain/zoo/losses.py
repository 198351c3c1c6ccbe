"""The two losses of the ReID strong baseline: smoothed cross-entropy and the batch-hard triplet.

Examples:
    >>> import torch
    >>> logits = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    >>> targets = torch.tensor([0, 1])
    >>> round(float(label_smoothing_cross_entropy(logits, targets, smoothing=0.0)), 4)
    0.0181
    >>> feats = torch.tensor([[0.0, 0.0], [0.0, 0.1], [5.0, 0.0], [5.0, 0.1]])
    >>> float(batch_hard_triplet_loss(feats, torch.tensor([0, 0, 1, 1]), margin=0.3))
    0.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reidexplain.distance import distance_matrix

__all__ = ["label_smoothing_cross_entropy", "batch_hard_triplet_loss"]


def _check_targets(n: int, targets: torch.Tensor, fn: str) -> None:
    if targets.dim() != 1 or targets.shape[0] != n:
        raise ValueError(f"{fn}: `targets` must have shape ({n},), got {tuple(targets.shape)}")


def label_smoothing_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.1
) -> torch.Tensor:
    """Cross-entropy against ``(1 - smoothing) * one_hot + smoothing / K``, averaged over the batch.

    Args:
        logits: ``(B,K)`` class scores.
        targets: ``(B,)`` integer classes in ``[0, K)``.
        smoothing: Probability mass spread uniformly over the ``K`` classes, in ``[0, 1)``.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: ``logits`` is not 2-D, ``targets`` does not match, or ``smoothing`` is outside
            ``[0, 1)``.

    Examples:
        >>> import torch
        >>> loss = label_smoothing_cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> round(float(loss), 4)  # uniform logits: log(4) whatever the smoothing
        1.3863
    """
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"label_smoothing_cross_entropy: `logits` must be (B,K), got {tuple(logits.shape)}")
    _check_targets(logits.shape[0], targets, "label_smoothing_cross_entropy")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label_smoothing_cross_entropy: `smoothing` must be in [0, 1), got {smoothing}")
    log_probs = F.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


def batch_hard_triplet_loss(
    features: torch.Tensor, targets: torch.Tensor, margin: float = 0.3
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances.

    For every anchor, the farthest positive and the closest negative in the batch form the triplet:
    ``mean(relu(d(a, p_hard) - d(a, n_hard) + margin))``. Anchors without a positive or without a
    negative in the batch are left out; if none is left the loss is 0 (and still differentiable).

    Args:
        features: ``(B,D)`` embeddings (the strong baseline uses those before the BN-neck).
        targets: ``(B,)`` identity labels.
        margin: Margin (>= 0).

    Returns:
        A scalar tensor.

    Raises:
        ValueError: wrong shapes or a negative margin.

    Examples:
        >>> import torch
        >>> feats = torch.tensor([[0.0], [2.0], [1.0], [3.0]])
        >>> float(batch_hard_triplet_loss(feats, torch.tensor([0, 0, 1, 1]), margin=0.0))
        1.0
    """
    if features.dim() != 2:
        raise ValueError(f"batch_hard_triplet_loss: `features` must be (B,D), got {tuple(features.shape)}")
    _check_targets(features.shape[0], targets, "batch_hard_triplet_loss")
    if margin < 0:
        raise ValueError(f"batch_hard_triplet_loss: `margin` must be >= 0, got {margin}")
    dist = distance_matrix(features, features)
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    eye = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
    positive = same & ~eye
    negative = ~same
    usable = positive.any(1) & negative.any(1)
    if not usable.any():
        return features.sum() * 0.0
    inf = torch.finfo(dist.dtype).max
    hardest_positive = dist.masked_fill(~positive, -inf).amax(dim=1)
    hardest_negative = dist.masked_fill(~negative, inf).amin(dim=1)
    losses = F.relu(hardest_positive - hardest_negative + margin)
    return losses[usable].mean()
