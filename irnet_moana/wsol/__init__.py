"""Weakly supervised object localisation: metadata, box geometry and the box metrics."""
from irnet_moana.wsol.boxes import (box_iou, boxes_at_thresholds, boxes_from_scoremap, centre_scoremap,
                                    normalize_scoremap, resize_boxes)
from irnet_moana.wsol.evaluation import (BoxAccumulator, accumulate_scoremaps, centre_baseline_accumulator,
                                         evaluate_scoremap_dir, format_one_line, format_results, load_predictions,
                                         load_scoremap)
from irnet_moana.wsol.metadata import (MetadataError, WSOLMetadata, convert_cub, convert_ilsvrc, read_metadata,
                                       write_metadata)

__all__ = [
    "BoxAccumulator", "MetadataError", "WSOLMetadata", "accumulate_scoremaps", "box_iou", "boxes_at_thresholds",
    "boxes_from_scoremap", "centre_baseline_accumulator", "centre_scoremap", "convert_cub", "convert_ilsvrc",
    "evaluate_scoremap_dir", "format_one_line", "format_results", "load_predictions", "load_scoremap",
    "normalize_scoremap", "read_metadata", "resize_boxes", "write_metadata",
]
