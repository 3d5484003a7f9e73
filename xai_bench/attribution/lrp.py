"""Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2019) through Zennit's rules and composites.

Zennit (Anders et al. 2021) is the maintained PyTorch implementation: its composites assign a rule per layer type
(ε, z⁺, αβ, γ, flat, z^B) and its canonizers merge batch norms into the preceding convolution and expose ResNets'
residual sums, the two things a hand-written LRP gets wrong most often. Captum's ``LRP`` is the alternative; it has
no canonizers (batch norm falls back to a gradient rule) and no composites, so we use Zennit. We only add what the
benchmark needs: the model's own normalisation is stepped over (see :meth:`LRP.attribute`), relevance starts at the
target logit, and hooks and canonizers are always removed.

Conservation: with every rule's bias left out of the redistribution (``zero_bias: true``, what the rules' derivation
assumes) the relevance of a ReLU/max-pool network sums to the target logit up to the ε stabiliser. With biases kept
(the default, as in Zennit) each layer's bias absorbs its share and the sum is smaller than the logit by that share.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from xai_bench.attribution.base import AttributionMethod
from xai_bench.checks import check_images
from xai_bench.errors import ConfigError

__all__ = ["COMPOSITES", "LRP"]

COMPOSITES = ("epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat",
              "epsilon_gamma_box")


def _zennit() -> Any:
    try:
        import zennit.canonizers
        import zennit.composites
        import zennit.rules
        import zennit.types
    except ImportError as err:  # pragma: no cover - zennit is a core dependency
        raise ConfigError("LRP needs the zennit package: pip install 'xai-bench[lrp]' (or pip install zennit)") from err
    import zennit

    return zennit


class LRP(AttributionMethod):
    """Layer-wise Relevance Propagation with a Zennit composite, in Captum's shape.

    Args:
        forward_func: the classifier (an :class:`~xai_bench.models.ImageClassifier` is explained through its inner
            ``net`` on normalised inputs; any other module as it is).
        composite: ``epsilon`` (LRP-ε on every conv/linear layer), ``epsilon_plus`` (z⁺ on convolutions, ε on dense
            layers), ``epsilon_plus_flat`` (flat rule on the first layer), ``epsilon_alpha2_beta1`` (α=2, β=1 on
            convolutions), ``epsilon_alpha2_beta1_flat``, or ``epsilon_gamma_box`` (z^B on the first layer, bounded
            by the pixel range, γ on the other convolutions) — Zennit's composites for VGG/ResNet-type CNNs.
        epsilon: ε of the ε rule. Default 1e-6.
        gamma: γ of the γ rule (``epsilon_gamma_box``). Default 0.25.
        zero_bias: leave biases out of the redistribution, so relevance is conserved. Default False.
        canonize: merge batch norms into convolutions (and, for torchvision ResNets, expose the residual sums)
            before the rules are attached. Default True.
    """

    signed = True

    def __init__(self, forward_func: nn.Module, *, composite: str = "epsilon", epsilon: float = 1e-6,
                 gamma: float = 0.25, zero_bias: bool = False, canonize: bool = True) -> None:
        super().__init__(forward_func)
        if composite not in COMPOSITES:
            raise ConfigError(f"attribution.<lrp>.method.composite={composite!r} is not one of {COMPOSITES}")
        if not isinstance(forward_func, nn.Module):
            raise ConfigError("LRP attaches rules to modules: the model must be an nn.Module")
        self.composite = composite
        self.epsilon = float(epsilon)
        self.gamma = float(gamma)
        self.zero_bias = bool(zero_bias)
        self.canonize = bool(canonize)

    def _split(self) -> tuple[nn.Module, Tensor | None, Tensor | None]:
        """The network the rules go on and the normalisation in front of it (``ImageClassifier``: mean/std)."""
        model = self.forward_func
        net = getattr(model, "net", None)
        mean, std = getattr(model, "mean", None), getattr(model, "std", None)
        if isinstance(net, nn.Module) and isinstance(mean, Tensor) and isinstance(std, Tensor):
            return net, mean, std
        return model, None, None

    def _make_composite(self, net: nn.Module, low: Tensor, high: Tensor) -> Any:
        zennit = _zennit()
        comps, rules, types = zennit.composites, zennit.rules, zennit.types
        canonizers = []
        if self.canonize:
            canonizers = [zennit.canonizers.SequentialMergeBatchNorm()]
            try:
                import torchvision
                from zennit.torchvision import ResNetCanonizer

                if isinstance(net, torchvision.models.ResNet):
                    canonizers = [ResNetCanonizer()]
            except ImportError:  # pragma: no cover - torchvision is a core dependency
                pass
        zero = "bias" if self.zero_bias else None
        if self.composite == "epsilon":
            layer_map = comps.layer_map_base() + [
                (types.Convolution, rules.Epsilon(epsilon=self.epsilon, zero_params=zero)),
                (nn.Linear, rules.Epsilon(epsilon=self.epsilon, zero_params=zero)),
            ]
            return comps.LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
        if self.composite == "epsilon_gamma_box":
            return comps.EpsilonGammaBox(low=low, high=high, epsilon=self.epsilon, gamma=self.gamma,
                                         zero_params=zero, canonizers=canonizers)
        cls = {"epsilon_plus": comps.EpsilonPlus, "epsilon_plus_flat": comps.EpsilonPlusFlat,
               "epsilon_alpha2_beta1": comps.EpsilonAlpha2Beta1,
               "epsilon_alpha2_beta1_flat": comps.EpsilonAlpha2Beta1Flat}[self.composite]
        return cls(epsilon=self.epsilon, zero_params=zero, canonizers=canonizers)

    def attribute(self, inputs: Tensor, target: Any = None) -> Tensor:
        """Relevance of each input pixel for the ``target`` logit.

        The model's normalisation ``(x − mean) / std`` acts on each pixel alone, so it moves no relevance between
        pixels: the rules run on the inner network from the normalised image, and the relevance of a normalised
        pixel is that of the pixel (differentiating through the normalisation would instead scale it by 1/std).

        Args:
            inputs: N×C×H×W images in [0, 1].
            target: N class ids (or one int); ``None``: the predicted class.

        Returns:
            N×C×H×W relevance; summed over pixels it is the target logit minus what biases and ε absorbed.
        """
        check_images(inputs, "inputs", check_range=False)
        net, mean, std = self._split()
        x = inputs.detach()
        if mean is not None:
            x = (x - mean) / std
            low, high = ((torch.zeros_like(inputs) - mean) / std), ((torch.ones_like(inputs) - mean) / std)
        else:
            low, high = torch.zeros_like(inputs), torch.ones_like(inputs)
        composite = self._make_composite(net, low, high)
        x = x.clone().requires_grad_(True)
        with torch.enable_grad(), composite.context(net) as modified:
            out = modified(x)
            if target is None:
                t = out.argmax(1)
            else:
                t = torch.as_tensor(target, device=out.device).long().expand(out.shape[0])
            seed = torch.zeros_like(out).scatter(1, t[:, None], 1.0) * out.detach()  # relevance = the target logit
            (relevance,) = torch.autograd.grad(out, x, grad_outputs=seed)
        return relevance.detach()
