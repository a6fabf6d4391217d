"""WSOL stage 2: score maps of the trained network, box metrics, centre-box baseline and a figure.

Score map = the class activation map of the image's ground-truth class,
resized to 224 x 224 (bicubic) and min-max normalised, as in the standard
WSOL protocol (wsolevaluation feeds the ground-truth class to the network
for every box metric). That one map serves all metrics: Top-1 Loc only counts
images whose top-1 class is the ground truth, where the top-1 map is that
map; Top-5 Loc counts the ground-truth box among images whose top five
contain the ground truth. The class predictions (top five) are stored beside
the maps.

Outputs under the run directory:
  wsol/scoremaps/<split>/<image id>.npy   float32 224 x 224 in [0, 1]
  wsol/predictions/<split>.json           image id -> top-5 classes, best first
  wsol/predictions/<split>/batch_*.json   the same per batch, with the fingerprint (resumption)
  metrics/eval_wsol.json                  metrics, threshold and its split, centre baseline
  figures/wsol_examples.png               wsol.num_examples evenly spaced test images, maps and boxes

Resumable: images are processed in fixed batches of ``wsol.eval_batch_size``
consecutive ids; a batch whose maps and prediction file all exist is skipped,
any other batch is redone whole, so an interrupted and resumed run computes
exactly the batches an uninterrupted one does and gives identical numbers.
Each batch's prediction file records a fingerprint of the weights file and
the test-time settings, so maps of an earlier model are redone, not reused.
The metrics are computed from the saved maps and predictions alone (the same
code path as ``pipelines/eval_wsol.py --scoremap-root``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import io
from ..figures.drawing import save_figure
from ..figures.wsol_examples import example_figure
from ..models.build import wsol_net, wsol_weights
from ..models.wsol_net import WSOLNet
from ..outputs import (EVAL_WSOL, FIGURES, METRICS, WSOL, WSOL_FIGURE, WSOL_PREDICTIONS,
                       WSOL_SCOREMAPS)
from ..precision import FP32, Precision
from ..run import Run, progress, start_run
from ..training import TrainingError, autocast, load_weights
from ..wsol.boxes import normalize_scoremap
from ..wsol.data import WSOLTestDataset
from ..wsol.evaluation import evaluate_scoremap_dir, format_results, load_predictions, scoremap_path
from ..wsol.metadata import WSOLMetadata, read_metadata

OUTPUTS = (f"{WSOL}/{WSOL_SCOREMAPS}", f"{WSOL}/{WSOL_PREDICTIONS}", f"{METRICS}/{EVAL_WSOL}",
           f"{FIGURES}/{WSOL_FIGURE}")
TOPK = 5


def batches(image_ids: Sequence[str], size: int) -> list[list[str]]:
    """Consecutive groups of ``size`` ids (the last may be shorter): the unit of work and of resumption."""
    return [list(image_ids[start:start + size]) for start in range(0, len(image_ids), size)]


@torch.no_grad()
def predict(model: WSOLNet, images: torch.Tensor, labels: torch.Tensor, precision: Precision = FP32,
            topk: int = TOPK) -> tuple[np.ndarray, np.ndarray]:
    """(class maps of the given classes (N, h, w) float32, top-k classes (N, k) best first) in one pass."""
    with autocast(images.device, precision):
        calibrated = model.head.calibrate(model.backbone(images))
        maps = model.head.class_maps(calibrated)
    maps = maps.float()
    # No classifier bias: the logits are the spatial means of the class maps.
    logits = maps.mean(dim=(2, 3))
    top = logits.topk(min(topk, logits.shape[1]), dim=1).indices
    chosen = maps[torch.arange(len(labels), device=maps.device), labels]
    return chosen.cpu().numpy(), top.cpu().numpy()


def save_scoremap(path: Path, cam: np.ndarray) -> None:
    """Resize to 224 x 224, min-max normalise and write as float32 .npy, atomically."""
    with io.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, normalize_scoremap(cam).astype(np.float32))


def _batch_file(prediction_dir: Path, index: int) -> Path:
    return prediction_dir / f"batch_{index:06d}.json"


def source_fingerprint(weights: Path, cfg: dict, precision: Precision) -> str:
    """Identifies what the maps are computed from: the weights file's bytes and the test-time settings."""
    if not weights.is_file():
        raise TrainingError(f"weights {weights} do not exist; run pipelines/train_wsol.py with this setting first")
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps([cfg["wsol"]["test_size"], precision.name]).encode())
    return digest.hexdigest()[:16]


def _batch_done(image_ids: Sequence[str], batch_file: Path, map_dir: Path, source: str) -> bool:
    if not io.output_is_valid(batch_file):
        return False
    saved = io.read_json(batch_file)
    # Another batch size gives other ids; other weights or test settings another source.
    if not isinstance(saved, dict) or saved.get("source") != source:
        return False
    if not isinstance(saved.get("top5"), dict) or list(saved["top5"]) != list(image_ids):
        return False
    return all(io.output_is_valid(scoremap_path(map_dir, image_id)) for image_id in image_ids)


def write_split(run_: Run, split: str, metadata: WSOLMetadata, load_model: Callable[[], WSOLNet]) -> Path:
    """Score maps and predictions of every image of one split; returns the predictions file."""
    w = run_.cfg["wsol"]
    out = run_.path(WSOL)
    map_dir, prediction_dir = out / WSOL_SCOREMAPS / split, out / WSOL_PREDICTIONS / split
    groups = batches(metadata.image_ids, w["eval_batch_size"])
    source = source_fingerprint(wsol_weights(run_.dir), run_.cfg, run_.precision)
    todo = [k for k, ids in enumerate(groups)
            if not _batch_done(ids, _batch_file(prediction_dir, k), map_dir, source)]
    run_.log.info("%s: %d images, %d of %d batches to compute", split, len(metadata.image_ids), len(todo),
                  len(groups))
    if todo:
        model = load_model()
        dataset = WSOLTestDataset(w["image_root"], metadata, w["num_classes"], w["test_size"])
        offsets = [k * w["eval_batch_size"] for k in todo]
        loader = DataLoader(dataset, num_workers=run_.cfg["data"]["num_workers"],
                            batch_sampler=[list(range(o, min(o + w["eval_batch_size"], len(dataset))))
                                           for o in offsets])
        for k, batch in progress(zip(todo, loader), len(todo), f"score maps {split}"):
            maps, top = predict(model, batch["image"].to(run_.device), batch["label"].to(run_.device),
                                run_.precision)
            for image_id, cam in zip(batch["name"], maps):
                save_scoremap(scoremap_path(map_dir, image_id), cam)
            # Written last: its presence marks the batch complete.
            io.write_json(_batch_file(prediction_dir, k), {"source": source, "top5": {
                image_id: [int(c) for c in classes] for image_id, classes in zip(batch["name"], top)}})
    predictions: dict[str, list[int]] = {}
    for k in range(len(groups)):
        predictions.update(io.read_json(_batch_file(prediction_dir, k))["top5"])
    path = out / WSOL_PREDICTIONS / f"{split}.json"
    io.write_json(path, predictions)
    return path


def choose_threshold_split(metadata_root: Path, threshold_split: str, eval_split: str) -> str:
    """``threshold_split`` when its metadata folder exists, else the evaluated split itself."""
    return threshold_split if (metadata_root / threshold_split / "image_ids.txt").is_file() else eval_split


def evaluate(run_: Run, metadata_root: Path, eval_split: str, threshold_split: str) -> dict[str, Any]:
    """Metrics of the saved maps and of the centre-box baseline, both with the threshold from ``threshold_split``."""
    out = run_.path(WSOL)
    held_out = threshold_split != eval_split
    result = evaluate_scoremap_dir(
        out / WSOL_SCOREMAPS / eval_split, metadata_root / eval_split,
        predictions_path=out / WSOL_PREDICTIONS / f"{eval_split}.json",
        threshold_scoremap_root=out / WSOL_SCOREMAPS / threshold_split if held_out else None,
        threshold_metadata_root=metadata_root / threshold_split if held_out else None)
    result["centre_baseline"] = evaluate_scoremap_dir(
        None, metadata_root / eval_split, threshold_metadata_root=metadata_root / threshold_split if held_out else None)
    return result


def comparison_line(result: dict[str, Any]) -> str:
    base = result["centre_baseline"]
    return (f"GT-known Loc {result['gt_known_loc']:.2f} vs centre baseline {base['gt_known_loc']:.2f}; "
            f"MaxBoxAccV2 {result['MaxBoxAccV2']:.2f} vs {base['MaxBoxAccV2']:.2f} "
            f"(split {result['split']}, threshold chosen on {result['threshold_split']})")


def run(cfg: dict, out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Score maps, metrics (metrics/eval_wsol.json, and ``out`` when given) and the example figure."""
    run_ = start_run(cfg, "eval_wsol", precision_key="wsol.infer_precision")
    w = cfg["wsol"]
    metadata_root = Path(w["metadata_root"])
    eval_split = w["eval_split"]
    threshold_split = choose_threshold_split(metadata_root, w["threshold_split"], eval_split)
    if threshold_split != w["threshold_split"]:
        run_.log.warning("no metadata split %s under %s: the localisation threshold is chosen on the evaluated "
                         "split %s itself (optimistic)", w["threshold_split"], metadata_root, eval_split)
    @functools.cache
    def load_model() -> WSOLNet:
        net = wsol_net(cfg, weights="none")
        load_weights(wsol_weights(run_.dir), net)
        return net.to(run_.device).eval()

    metadata = {split: read_metadata(metadata_root / split) for split in dict.fromkeys([eval_split, threshold_split])}
    prediction_files = {split: write_split(run_, split, meta, load_model) for split, meta in metadata.items()}
    map_dir = run_.path(WSOL, WSOL_SCOREMAPS, eval_split)
    result = evaluate(run_, metadata_root, eval_split, threshold_split)
    result.update({"moana": w["moana"], "backbone": w["backbone"], "dataset": w["dataset"],
                   "score_map": "CAM of the ground-truth class, 224 x 224, min-max normalised",
                   "scoremap_root": str(map_dir), "predictions": str(prediction_files[eval_split])})
    metrics_path = run_.path(METRICS, EVAL_WSOL)
    io.write_json(metrics_path, result)
    if out is not None:
        io.write_json(out, result)
    if w["num_examples"] > 0:
        figure = example_figure(w["image_root"], metadata[eval_split], map_dir, result["threshold"],
                                result["threshold_split"], w["num_examples"],
                                predictions=load_predictions(prediction_files[eval_split]))
        run_.log.info("figure: %s", save_figure(run_.path(FIGURES, WSOL_FIGURE), figure))
    run_.log.info(format_results(result))
    run_.log.info(comparison_line(result))
    run_.finish(f"MoANA {'on' if w['moana'] else 'off'}: {comparison_line(result)}; "
                f"Top-1 Loc {result['top1_loc']:.2f}", metrics_path)
    return result
