"""Attribution methods Captum lacks (RISE, Score-CAM, Eigen-CAM, Grad-CAM++, ForGrad), guided methods that refuse
activations they cannot handle, method facts (:mod:`.base`), and the runner that turns a ``conf/attribution/*.yaml``
node into an :class:`Explainer` (``build_attribution``)."""

from xai_bench.attribution.base import AttributionMethod, MethodFacts, method_facts
from xai_bench.attribution.baselines import make_baseline
from xai_bench.attribution.ablation_cam import AblationCAM
from xai_bench.attribution.cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from xai_bench.attribution.cam_base import BaseCAM, FPNLevelsToMap, ViTTokensToGrid
from xai_bench.attribution.cam_targets import BoxScoreTarget, ClassTarget
from xai_bench.attribution.forgrad import ForGrad, forgrad_filter
from xai_bench.attribution.guided import Deconvolution, GuidedBackprop, GuidedGradCam, check_guided_support
from xai_bench.attribution.rise import RISE, generate_rise_masks
from xai_bench.attribution.runner import Explainer, build_attribution, expand_targets, to_display
from xai_bench.attribution.superpixels import superpixel_masks
from xai_bench.attribution.vit_attention import AttentionRollout, RawAttention, TransformerAttribution

__all__ = [
    "AttributionMethod",
    "MethodFacts",
    "method_facts",
    "RISE",
    "AblationCAM",
    "BaseCAM",
    "BoxScoreTarget",
    "ClassTarget",
    "FPNLevelsToMap",
    "GradCAM",
    "ViTTokensToGrid",
    "AttentionRollout",
    "RawAttention",
    "TransformerAttribution",
    "Deconvolution",
    "EigenCAM",
    "Explainer",
    "ForGrad",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCam",
    "ScoreCAM",
    "build_attribution",
    "check_guided_support",
    "expand_targets",
    "forgrad_filter",
    "generate_rise_masks",
    "make_baseline",
    "superpixel_masks",
    "to_display",
]
