"""Attribution methods Captum lacks (RISE, Score-CAM, Eigen-CAM, Grad-CAM++, ForGrad), guided methods that refuse
activations they cannot handle, and the adaptive batching helpers the runner shares."""

from xai_bench.attribution._batching import (
    AdaptiveBatcher,
    default_batch_size,
    is_out_of_memory,
    run_batched,
    target_indices,
)
from xai_bench.attribution.cam import EigenCAM, GradCAMPlusPlus, ScoreCAM
from xai_bench.attribution.forgrad import ForGrad, forgrad_filter
from xai_bench.attribution.guided import Deconvolution, GuidedBackprop, GuidedGradCam, check_guided_support
from xai_bench.attribution.rise import RISE, generate_rise_masks

__all__ = [
    "RISE",
    "AdaptiveBatcher",
    "Deconvolution",
    "EigenCAM",
    "ForGrad",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCam",
    "ScoreCAM",
    "check_guided_support",
    "default_batch_size",
    "forgrad_filter",
    "generate_rise_masks",
    "is_out_of_memory",
    "run_batched",
    "target_indices",
]
