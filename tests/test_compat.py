import torch

from xai_bench import _compat


def test_torchvision_and_timm_import_after_compat():
    import timm
    import torchvision

    assert torchvision.models.get_model("resnet18", weights=None) is not None
    assert timm.create_model("resnet18", pretrained=False, num_classes=2) is not None


def test_nms_schema_declared_only_when_extension_missing():
    op = torch.ops.torchvision.nms  # exists either way: from the extension or from the compat module
    assert op is not None
    assert (_compat._LIB is None) == _compat.TORCHVISION_EXTENSION_LOADED


def test_reference_nms_is_greedy_nms():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    keep = _compat.nms_reference(boxes, scores, 0.5)
    assert keep.tolist() == [3, 2]
    assert _compat.nms_reference(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
