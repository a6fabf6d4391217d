"""Evaluation of the final segmentation network: full-resolution predictions, optional dense CRF, mIoU.

Three predictions per image of ``deeplab.eval_list``, each a palette PNG
under ``<run_dir>/deeplab/``:

* ``pred_ss``: single scale, as deeplab-pytorch evaluates: the model's eval
  forward at the image's own size (its built-in max fusion over
  ``deeplab.scales``, 1 / 0.75 / 0.5), logits upsampled bilinearly to the
  image size, softmax, argmax;
* ``pred_msf``: multi-scale + flip: for every scale of
  ``deeplab.eval_scales`` the single-scale network (without the built-in
  fusion, whose scales the evaluation scales already cover) on the image
  resized as deeplab-pytorch resizes it (OpenCV linear) and on its mirror; each logit map is upsampled bilinearly to the
  image size (the mirror's flipped back) and softmaxed; the probabilities
  are averaged;
* ``pred_msf_crf`` (``deeplab.crf``): the multi-scale + flip probabilities
  refined by a dense CRF on the image with deeplab-pytorch's test
  parameters (:data:`irnet_moana.crf.DEEPLAB_TEST`), in a process pool.

Existing valid PNGs are kept, so an interrupted evaluation resumes; under
torchrun each rank predicts its share and rank 0 scores once all exist.
"""
from __future__ import annotations

import collections
import multiprocessing
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from deeplab.build import describe, trained_deeplab
from deeplab.predict import predict_multi_scale_flip, predict_single_scale
from irnet_moana import distributed, io
from irnet_moana.crf import DEEPLAB_TEST, CRFParams, dense_crf
from irnet_moana.data import transforms as T
from irnet_moana.data.datasets import InferenceDataset, collate_single
from irnet_moana.data.voc import VOCData, class_names_with_background
from irnet_moana.evaluation import score_mask_folder
from irnet_moana.metrics import format_iou_table
from irnet_moana.outputs import DEEPLAB, EVAL_DEEPLAB, METRICS
from irnet_moana.outputs import DEEPLAB_CRF as CRF
from irnet_moana.outputs import DEEPLAB_MSF as MSF
from irnet_moana.outputs import DEEPLAB_SS as SS
from irnet_moana.precision import FP32, Precision
from irnet_moana.run import pending, progress, start_run

# Result keys of the JSON, per prediction folder.
SETTINGS = {SS: "single_scale", MSF: "multi_scale_flip", CRF: "multi_scale_flip_crf"}
OUTPUTS = tuple(f"{DEEPLAB}/{folder}" for folder in SETTINGS) + (f"{METRICS}/{EVAL_DEEPLAB}",)


def crf_label_map(image: np.ndarray, probs: np.ndarray, params: CRFParams = DEEPLAB_TEST) -> np.ndarray:
    """Argmax (uint8, H x W) of the dense-CRF posterior of ``probs`` (C, H, W) on the uint8 RGB ``image``."""
    return dense_crf(image, probs, params).argmax(0).astype(np.uint8)


def crf_workers(setting: int) -> int:
    """Number of CRF processes: ``setting``, or every core this process may use when 0."""
    return setting if setting > 0 else len(os.sched_getaffinity(0))


def crf_label_maps(jobs: Iterable[tuple[str, np.ndarray, np.ndarray]], workers: int,
                   params: CRFParams = DEEPLAB_TEST) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, image, probs)`` jobs -> ``(name, crf_label_map(...))`` in input order, in ``workers`` processes.

    ``jobs`` is consumed lazily (it may run the network as it goes) and at
    most ``2 * workers`` jobs wait in the pool, which bounds the memory
    taken by full-resolution probability maps. Only numpy arrays and plain
    data travel to the workers, which never run torch. The pool starts
    before the first job is drawn, i.e. before ``jobs`` loads a model, so
    forked workers stay small.
    """
    pool = multiprocessing.get_context().Pool(workers)
    window: collections.deque = collections.deque()
    try:
        for name, image, probs in jobs:
            window.append((name, pool.apply_async(crf_label_map, (image, probs, params))))
            if len(window) >= 2 * workers:
                done, result = window.popleft()
                yield done, result.get()
        while window:
            done, result = window.popleft()
            yield done, result.get()
    finally:
        pool.terminate()
        pool.join()


def _predict(cfg: dict, data: VOCData, run_dir: Path, device: torch.device, precision: Precision,
             todo: dict[str, set[str]]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Write the single- and multi-scale PNGs still to do; yield a CRF job per image that needs one."""
    d = cfg["deeplab"]
    stems = [s for s in data.split(d["eval_list"]) if any(s in names for names in todo.values())]
    if not stems:
        return
    model = trained_deeplab(cfg, data.num_classes, device)
    dataset = InferenceDataset(data, stems, d["eval_scales"], rescale=T.linear_rescale)
    loader = DataLoader(dataset, batch_size=1, num_workers=cfg["data"]["num_workers"], collate_fn=collate_single)
    for sample in progress(loader, len(stems), "eval_deeplab"):
        name = sample["name"]
        if name in todo[SS]:
            image = torch.from_numpy(T.to_chw(T.normalize(sample["image"]))).to(device)
            probs = predict_single_scale(model, image, precision)
            io.save_label_png(run_dir / SS / f"{name}.png", probs.argmax(0).byte().cpu().numpy())
        if name in todo[MSF] or name in todo[CRF]:
            pyramid = [p.to(device) for p in sample["pyramid"]]
            probs = predict_multi_scale_flip(model, pyramid, sample["size"], precision).cpu().numpy()
            if name in todo[MSF]:
                io.save_label_png(run_dir / MSF / f"{name}.png", probs.argmax(0).astype(np.uint8))
            if name in todo[CRF]:
                yield name, sample["image"], probs


def predict(cfg: dict, run_dir: Path, device: torch.device, precision: Precision = FP32,
            log=None) -> list[str]:
    """Write this rank's missing prediction PNGs; returns the prediction folders of this setting."""
    d = cfg["deeplab"]
    data = VOCData(cfg["data"]["root"])
    stems = data.split(d["eval_list"])
    out_dir = run_dir / DEEPLAB
    folders = [SS, MSF, CRF] if d["crf"] else [SS, MSF]
    todo = {folder: set() for folder in (SS, MSF, CRF)}
    for folder in folders:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        todo[folder] = set(pending(stems, out_dir / folder, ".png", log))
    if log is not None:
        log.info("to predict on %s: %s", d["eval_list"], ", ".join(f"{f} {len(todo[f])}" for f in folders))
    jobs = _predict(cfg, data, out_dir, device, precision, todo)
    if todo[CRF]:
        for name, labels in crf_label_maps(jobs, crf_workers(d["crf_workers"])):
            io.save_label_png(out_dir / CRF / f"{name}.png", labels)
    else:
        collections.deque(jobs, maxlen=0)  # runs the predictions; no image needs a CRF job
    return folders


def score(cfg: dict, run_dir: Path, folders: Sequence[str]) -> dict:
    """Per-setting mIoU summaries of the prediction folders against the ground truth."""
    d = cfg["deeplab"]
    data = VOCData(cfg["data"]["root"])
    stems = data.split(d["eval_list"])
    names = class_names_with_background(data)
    result: dict = {}
    for folder in folders:
        summary = score_mask_folder(run_dir / DEEPLAB / folder, data.root / "SegmentationClass", names, stems)
        summary.pop("num_images")
        result[SETTINGS[folder]] = summary
    result.update({"list": d["eval_list"], "num_images": len(stems), "scales": list(d["scales"]),
                   "eval_scales": list(d["eval_scales"]), "crf_params": DEEPLAB_TEST.as_dict() if d["crf"] else None})
    return result


def result_line(result: dict) -> str:
    """``<list> mIoU ss X / msf Y[ / msf+crf Z]``."""
    parts = [f"ss {result['single_scale']['miou']:.1f}", f"msf {result['multi_scale_flip']['miou']:.1f}"]
    if "multi_scale_flip_crf" in result:
        parts.append(f"msf+crf {result['multi_scale_flip_crf']['miou']:.1f}")
    return f"{result['list']} mIoU " + " / ".join(parts)


def run(cfg: dict) -> dict | None:
    """Predict, score and write ``<run_dir>/metrics/eval_deeplab.json``; returns it (None on ranks > 0)."""
    run_ = start_run(cfg, "eval_deeplab", precision_key="deeplab.amp")
    distributed.init_distributed(run_.device)
    folders = predict(cfg, run_.dir, run_.device, run_.precision, run_.log)
    distributed.barrier()
    if not distributed.is_main():
        return None
    result = score(cfg, run_.dir, folders)
    for folder in folders:
        title = f"{describe(cfg)} {SETTINGS[folder].replace('_', ' ')} on {result['list']}"
        run_.log.info(format_iou_table(result[SETTINGS[folder]], title))
    out = run_.path(METRICS, EVAL_DEEPLAB)
    io.write_json(out, result)
    run_.finish(result_line(result), out)
    return result
