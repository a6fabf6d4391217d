"""Stage 2: multi-scale + flip CAMs per image, at stride 4 (``cam``) and image size (``high_res``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import io
from ..data.datasets import InferenceDataset, collate_single
from ..data.voc import VOCData
from ..data.cams import label_keys
from ..models.build import trained_cam_net
from ..models.cam_net import CAMNet
from ..outputs import CAMS
from ..precision import Precision
from ..run import pending, progress, start_run

OUTPUTS = (CAMS,)


def strided_size(size: Sequence[int], stride: int) -> tuple[int, int]:
    return math.ceil(size[0] / stride), math.ceil(size[1] / stride)


def strided_up_size(size: Sequence[int], stride: int) -> tuple[int, int]:
    return strided_size(size, stride)[0] * stride, strided_size(size, stride)[1] * stride


def max_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Divide each class map by its maximum (+1e-5, as IRNet does so empty maps stay 0)."""
    return maps / (maps.flatten(1).amax(1)[:, None, None] + 1e-5)


def inference_model(model: CAMNet, precision: Precision) -> CAMNet:
    """``model`` made ready for CAM inference, in place, and returned.

    Evaluation mode, the backbone's BatchNorm folded into its convolutions,
    channels-last (the layout oneDNN's convolutions want on the CPU: bf16 ran
    10x+ faster than in the default layout), and for a reduced ``precision``
    bf16 or fp16 weights, so that no per-call autocast casts are made.
    Folding and the cast together made bf16 CAM inference of the demo network
    1.12-1.15x faster than autocast over the unfolded network on a 2-core
    AMD EPYC with avx512_bf16.
    """
    model.eval()
    model.backbone.fold_batchnorm()
    model.to(precision.dtype)
    return model.to(memory_format=torch.channels_last)


@torch.no_grad()
def image_cams(model: CAMNet, pyramid: Sequence[torch.Tensor], size: Sequence[int], keys: np.ndarray,
               device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(cam, high_res) for one image from its scale pyramid (each scale stacked with its flip).

    As IRNet: each scale's map plus its un-flipped flip is resized to
    ceil(H/4) x ceil(W/4) and to the image size rounded up to the output
    stride (then cropped), summed over scales; only the image's classes are
    kept, each divided by its maximum. The images are given to the network
    in its weights' dtype (see :func:`inference_model`); the sums are float32.
    """
    dtype = next(model.parameters()).dtype
    keys_t = torch.from_numpy(keys).to(device)
    low_size = strided_size(size, 4)
    up_size = strided_up_size(size, model.output_stride)
    low = torch.zeros((len(keys), *low_size), device=device)
    high = torch.zeros((len(keys), *up_size), device=device)
    for images in pyramid:
        images = images.to(device, dtype, non_blocking=True).contiguous(memory_format=torch.channels_last)
        maps = model.cams(images).float()
        merged = (maps[0] + maps[1].flip(-1))[keys_t].unsqueeze(0)
        low += F.interpolate(merged, low_size, mode="bilinear", align_corners=False)[0]
        high += F.interpolate(merged, up_size, mode="bilinear", align_corners=False)[0]
    high = high[:, :size[0], :size[1]]
    return max_normalize(low).cpu().numpy(), max_normalize(high).cpu().numpy()



def run(cfg: dict, stems: list[str] | None = None) -> Path:
    """Write ``<run_dir>/cams/<id>.npz`` for every image of ``cam.infer_list`` (default ``data.train_list``)."""
    run_ = start_run(cfg, "make_cams", precision_key="cam.infer_precision")
    data = VOCData(cfg["data"]["root"])
    stems = stems if stems is not None else data.split(cfg["cam"]["infer_list"] or cfg["data"]["train_list"])
    labels = data.image_labels(stems)
    out_dir = run_.path(CAMS)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in pending(stems, out_dir, ".npz", run_.log) if labels[s].sum() > 0]
    if todo:
        model = inference_model(trained_cam_net(cfg, data.num_classes, run_.dir, run_.device), run_.precision)
        dataset = InferenceDataset(data, todo, cfg["cam"]["scales"], labels)
        loader = DataLoader(dataset, batch_size=1, num_workers=cfg["data"]["num_workers"],
                            collate_fn=collate_single)
        for sample in progress(loader, len(todo), "make_cams"):
            keys = label_keys(sample["label"])
            cam, high_res = image_cams(model, sample["pyramid"], sample["size"], keys, run_.device)
            io.save_npz(out_dir / f"{sample['name']}.npz",
                        {"keys": keys, "cam": cam.astype(np.float32), "high_res": high_res.astype(np.float32)})
    run_.finish(f"{len(todo)} CAMs written, {len(stems) - len(todo)} already done ({run_.precision.name})",
                out_dir)
    return out_dir
