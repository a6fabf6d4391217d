"""training.autocast: the one switch the training (amp) and inference (infer_precision) settings share."""
import pytest
import torch

from irnet_moana.training import TrainingError, autocast


@pytest.mark.parametrize("setting", ["none", "fp32"])
def test_full_precision_settings_leave_float32_alone(setting):
    with autocast(torch.device("cpu"), setting):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_autocasts_on_the_cpu():
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_fp16_needs_cuda():
    with pytest.raises(TrainingError, match="CUDA"):
        autocast(torch.device("cpu"), "fp16")
