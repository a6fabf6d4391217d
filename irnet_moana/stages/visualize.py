"""Stage: draw the figures of a WSSS run under ``<run_dir>/figures/``, each whose inputs exist.

Whatever a figure needs and the run does not have yet becomes an "n/a" cell or a skipped figure with a log line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..figures.drawing import save_figure
from ..figures.inputs import NUM_IMAGES, attempt, example_stems
from ..figures.instance_examples import instance_figure, instance_stems
from ..figures.moana_attention import moana_figure
from ..figures.pipeline_examples import pipeline_figure
from ..figures.training_curves import curves_figure
from ..outputs import CURVES_FIGURE, FIGURES, INSTANCE_FIGURE, MOANA_FIGURE, PIPELINE_FIGURE
from ..run import start_run

OUTPUTS = (FIGURES,)


def run(cfg: dict, num_images: int = NUM_IMAGES) -> list[Path]:
    """Write every figure whose inputs exist under ``<run_dir>/figures/``; returns the paths written.

    The pipeline and MoANA figures show the first ``num_images`` ids of ``data.eval_list`` (a fixed,
    reproducible choice); the instance figure prefers images with several objects of one class.
    Missing stage outputs leave "n/a" cells or skip a figure with a log line; nothing here fails
    because a stage has not run yet.
    """
    run_ = start_run(cfg, "visualize")
    figures: dict[str, Image.Image | None] = {}
    stems = attempt("example images", run_.log, example_stems, cfg, num_images) or []
    if stems:
        figures[PIPELINE_FIGURE] = attempt(PIPELINE_FIGURE, run_.log, pipeline_figure, cfg, run_.dir, stems,
                                           run_.device, run_.log)
        figures[MOANA_FIGURE] = attempt(MOANA_FIGURE, run_.log, moana_figure, cfg, run_.dir, stems, run_.device,
                                        run_.log)
    instance_examples = attempt("instance images", run_.log, instance_stems, cfg, num_images) or []
    if instance_examples:
        figures[INSTANCE_FIGURE] = attempt(INSTANCE_FIGURE, run_.log, instance_figure, cfg, run_.dir,
                                           instance_examples, run_.device, run_.log)
    figures[CURVES_FIGURE] = curves_figure(cfg, run_.dir, run_.log)
    written = []
    for name, figure in figures.items():
        if figure is not None:
            written.append(save_figure(run_.path(FIGURES, name), np.asarray(figure)))
            run_.log.info("figure: %s", written[-1])
    run_.finish(f"{len(written)} figure(s) written", run_.path(FIGURES))
    return written
