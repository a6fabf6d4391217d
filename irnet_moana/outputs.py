"""Every name under a run directory, in one place.

The stages write these, the orchestrator removes them on ``--force`` and
summarises them, the figures read them; spelling each once keeps the three
from drifting apart. A run directory looks like::

    <run_dir>/
      cam/ irn/ deeplab/ wsol/ maskrcnn/     training stages: model.pth, checkpoint.pth, tensorboard/
      cams/ ir_labels/ pseudo_masks/         per-image outputs
      instance_masks/ instance_baseline/ instance_masks_coco.json
      metrics/eval_*.json  figures/*.png  logs/<stage>.log
      timings.json precision.json metrics.json report.md
      plain_cam/                             the plain-CAM baseline run (demo settings)
"""
from __future__ import annotations

# weights written by every training stage
MODEL = "model.pth"
CHECKPOINT = "checkpoint.pth"
TENSORBOARD = "tensorboard"

# stage folders
CAM = "cam"
CAM_BACKBONE = "backbone.pth"  # the classifier's ResNet alone, for settings that start IRNet or DeepLab from it
CAMS = "cams"
IR_LABELS = "ir_labels"
IRN = "irn"
PSEUDO_MASKS = "pseudo_masks"
INSTANCE_MASKS = "instance_masks"
INSTANCE_BASELINE = "instance_baseline"  # connected components of the semantic pseudo masks
INSTANCE_COCO = "instance_masks_coco.json"
MASKRCNN = "maskrcnn"
MASKRCNN_PRED = "pred"  # under MASKRCNN
DEEPLAB = "deeplab"
DEEPLAB_TRAIN_INFO = "train_info.json"  # under DEEPLAB
# under DEEPLAB: predictions on deeplab.eval_list per test-time setting
DEEPLAB_SS, DEEPLAB_MSF, DEEPLAB_CRF = "pred_ss", "pred_msf", "pred_msf_crf"
WSOL = "wsol"
WSOL_SCOREMAPS = "scoremaps"  # under WSOL
WSOL_PREDICTIONS = "predictions"  # under WSOL
PLAIN_CAM = "plain_cam"  # the baseline with MoANA off, a run directory of its own


def seed_run(seed: int) -> str:
    """The run directory of one of several training seeds (wsol.seeds), under the setting's."""
    return f"seed{seed}"


# metrics
METRICS = "metrics"
EVAL_CAMS = "eval_cams.json"
EVAL_PSEUDO_MASKS = "eval_pseudo_masks.json"
EVAL_INSTANCES = "eval_instances.json"
EVAL_MASKRCNN = "eval_maskrcnn.json"
EVAL_DEEPLAB = "eval_deeplab.json"
EVAL_WSOL = "eval_wsol.json"

# figures
FIGURES = "figures"
PIPELINE_FIGURE = "pipeline_examples.png"
MOANA_FIGURE = "moana_attention.png"
INSTANCE_FIGURE = "instance_examples.png"
CURVES_FIGURE = "training_curves.png"
WSOL_FIGURE = "wsol_examples.png"

# run records
LOGS = "logs"
TIMINGS = "timings.json"  # stage -> wall seconds
PRECISIONS = "precision.json"  # stage -> precision and why
SUMMARY = "metrics.json"
REPORT = "report.md"
