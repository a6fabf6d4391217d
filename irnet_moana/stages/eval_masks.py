"""Score a run's label folder (pseudo masks or relation labels) against ground truth."""
from __future__ import annotations

from .. import io
from ..data.voc import VOCData, class_names_with_background
from ..evaluation import score_mask_folder
from ..metrics import format_iou_table
from ..outputs import EVAL_PSEUDO_MASKS, METRICS, PSEUDO_MASKS
from ..run import start_run

OUTPUTS = (f"{METRICS}/{EVAL_PSEUDO_MASKS}",)


def run(cfg: dict, folder: str = PSEUDO_MASKS) -> dict:
    """mIoU of ``<run_dir>/<folder>`` on ``data.eval_list``; writes metrics/eval_<folder>.json."""
    run_ = start_run(cfg, f"eval_{folder}")
    data = VOCData(cfg["data"]["root"])
    stems = data.split(cfg["data"]["eval_list"])
    gt_dir = data.root / "SegmentationClass"
    result = score_mask_folder(run_.path(folder), gt_dir, class_names_with_background(data), stems)
    result["list"] = cfg["data"]["eval_list"]
    run_.log.info(format_iou_table(result, f"{folder} mIoU on {cfg['data']['eval_list']}"))
    out = run_.path(METRICS, f"eval_{folder}.json")
    io.write_json(out, result)
    run_.finish(f"{folder.replace('_', ' ')} mIoU {result['miou']:.1f}", out)
    return result
