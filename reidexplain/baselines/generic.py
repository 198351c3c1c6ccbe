"""Any Captum attribution algorithm on a pair distance, by class or by name."""

from __future__ import annotations

import inspect
import re
from typing import Any

import captum.attr
import torch
from captum.attr import Attribution
from torch import nn

from ._base import PairExplainer

__all__ = ["CaptumPair", "captum_pair_explainer", "resolve_captum_class", "snake_case"]

# Wrappers of another attribution, or classes that do not explain a tensor input.
_UNSUPPORTED = {"NoiseTunnel", "LLMAttribution", "LLMGradientAttribution", "RemoteLLMAttribution",
                "DataLoaderAttribution", "LimeBase"}


def snake_case(name: str) -> str:
    """``"InputXGradient"`` -> ``"input_x_gradient"``, ``"LRP"`` -> ``"lrp"``.

    Examples:
        >>> snake_case("DeepLiftShap"), snake_case("LayerGradCam")
        ('deep_lift_shap', 'layer_grad_cam')
    """
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _captum_classes() -> dict[str, type[Attribution]]:
    classes = {}
    for name in captum.attr.__all__:
        obj = getattr(captum.attr, name, None)
        if (inspect.isclass(obj) and issubclass(obj, Attribution) and not inspect.isabstract(obj)
                and name not in _UNSUPPORTED and name not in ("Attribution", "GradientAttribution",
                                                             "PerturbationAttribution", "LayerAttribution",
                                                             "NeuronAttribution")):
            classes[name] = obj
    return classes


def resolve_captum_class(algorithm: str | type[Attribution]) -> type[Attribution]:
    """The Captum class named ``algorithm`` (``"DeepLift"`` or ``"deep_lift"``), or ``algorithm`` itself.

    Raises:
        ValueError: no such Captum attribution class.
        TypeError: ``algorithm`` is neither a string nor a Captum ``Attribution`` subclass.

    Examples:
        >>> resolve_captum_class("input_x_gradient").__name__
        'InputXGradient'
    """
    if inspect.isclass(algorithm) and issubclass(algorithm, Attribution):
        return algorithm
    if not isinstance(algorithm, str):
        raise TypeError(
            f"algorithm: expected a Captum Attribution class or its name, got {type(algorithm).__name__}"
        )
    classes = _captum_classes()
    by_snake = {snake_case(name): cls for name, cls in classes.items()}
    cls = classes.get(algorithm) or by_snake.get(algorithm)
    if cls is None:
        raise ValueError(
            f"algorithm: expected a Captum attribution name such as 'DeepLift' or 'deep_lift', got "
            f"{algorithm!r}; known: {sorted(by_snake)}"
        )
    return cls


class CaptumPair(PairExplainer):
    """A Captum attribution class applied to the pair distance; see :func:`captum_pair_explainer`.

    Args:
        algorithm: A Captum ``Attribution`` subclass.
        model: Target model ``(B,3,H,W) -> (B,D)``.
        metric: ``"euclidean"`` or ``"cosine"``.
        init_kwargs: Extra constructor arguments (``layer=...`` for layer methods).
        attribute_kwargs: Extra arguments of ``attribute`` (``n_steps``, ``baselines``, ...).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from captum.attr import InputXGradient
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, 6))
        >>> CaptumPair(InputXGradient, model).explain((torch.rand(3, 8, 4), torch.rand(3, 8, 4))).method
        'input_x_gradient'
    """

    def __init__(
        self,
        algorithm: type[Attribution],
        model: nn.Module,
        metric: str = "euclidean",
        init_kwargs: dict[str, Any] | None = None,
        attribute_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, metric)
        self.method = snake_case(algorithm.__name__)
        self.init_kwargs = dict(init_kwargs or {})
        self.attribute_kwargs = dict(attribute_kwargs or {})
        self.algorithm = algorithm(self.forward_func, **self.init_kwargs)

    def __repr__(self) -> str:
        return (f"CaptumPair({type(self.algorithm).__name__}, model={type(self.model).__name__}, "
                f"metric={self.metric!r})")

    def _attribute(self, inputs: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        kwargs = dict(self.attribute_kwargs)
        for key in ("baselines",):
            if isinstance(kwargs.get(key), torch.Tensor):
                kwargs[key] = kwargs[key].to(inputs.device)
        out = self.algorithm.attribute(inputs, additional_forward_args=self._forward_args(partners), **kwargs)
        if isinstance(out, tuple):
            # Methods asked for a convergence delta return (attributions, delta).
            out = out[0]
        return out


def captum_pair_explainer(
    algorithm: str | type[Attribution], model: nn.Module, metric: str = "euclidean", **kwargs: Any
) -> CaptumPair:
    """Wrap any Captum attribution so that ``.explain((a, b))`` explains the pair distance.

    Keyword arguments that the class's constructor accepts (``layer``, ``multiply_by_inputs``, ...)
    go to the constructor, the others to ``attribute`` (``n_steps``, ``baselines``, ...).
    Layer methods' ``(N,C,h,w)`` attributions are summed over channels and upsampled to the image.

    Args:
        algorithm: A Captum ``Attribution`` subclass or its name (``"DeepLift"`` or ``"deep_lift"``).
        model: Target model ``(B,3,H,W) -> (B,D)``.
        metric: ``"euclidean"`` or ``"cosine"``.
        **kwargs: Constructor or ``attribute`` arguments, see above.

    Returns:
        A :class:`CaptumPair`; its results are named by the snake-case class name.

    Raises:
        ValueError: unknown algorithm name, or ``additional_forward_args`` given (the partner
            embedding takes that slot).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from captum.attr import IntegratedGradients
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, 6))
        >>> explainer = captum_pair_explainer(IntegratedGradients, model, n_steps=16)
        >>> explainer.explain((torch.rand(3, 8, 4), torch.rand(3, 8, 4))).method
        'integrated_gradients'
    """
    cls = resolve_captum_class(algorithm)
    if "additional_forward_args" in kwargs:
        raise ValueError("additional_forward_args: reserved for the partner embedding; do not pass it")
    params = inspect.signature(cls.__init__).parameters
    init_names = {name for name in list(params)[2:]}  # skip self and the forward function / model
    init_kwargs = {k: v for k, v in kwargs.items() if k in init_names}
    attribute_kwargs = {k: v for k, v in kwargs.items() if k not in init_names}
    return CaptumPair(cls, model, metric, init_kwargs, attribute_kwargs)
