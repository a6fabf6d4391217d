"""DeepLab v2 trained on pseudo masks (the last WSSS stage)."""
from deeplab.model import (
    ASPP,
    ASPP_RATES,
    DEFAULT_SCALES,
    DEPTHS,
    DeepLabV2,
    MultiScale,
    deeplab_v2,
    load_weights,
    logit_size,
    param_groups,
    resize_labels,
    resnet_backbone,
)

__all__ = [
    "ASPP",
    "ASPP_RATES",
    "DEFAULT_SCALES",
    "DEPTHS",
    "DeepLabV2",
    "MultiScale",
    "deeplab_v2",
    "load_weights",
    "logit_size",
    "param_groups",
    "resize_labels",
    "resnet_backbone",
]
