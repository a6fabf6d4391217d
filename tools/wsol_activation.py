"""Where a demo-wsol network's activation sits: on the part, on the rest of the body or on the background.

    .venv/bin/python tools/wsol_activation.py RUN_DIR [RUN_DIR ...] --split val [--json OUT] [--figure OUT.png]

For each run directory of a network trained and evaluated on the synthetic
CUB-style set (``bash run_all.sh demo-wsol`` or pipelines/train_wsol.py +
eval_wsol.py), reads the split's saved score maps
(``<run_dir>/wsol/scoremaps/<split>/<image id>.npy``: the CAM of the true
class, 224 x 224, min-max normalised, as eval_wsol saves and the box metrics
read them), re-renders each image's scene (``cub_demo_scene``) for its body
and part masks and reports, as means over the images:

* mass: the share of the map's total on the part, on the body without the
  part and on the background (percent);
* mean: the mean normalised activation inside each region;
* box mask: the pixels the box extraction keeps at the run's localisation
  threshold (``threshold`` of ``<run_dir>/metrics/eval_wsol.json``, chosen on
  val), as the evaluation thresholds them: the share of them on the object
  (body and part), and the share of the object they cover;
* peak on part: the share of images whose map peaks on the part.

The ``area`` line gives each region's share of the image, what the mass would
be for a flat map. ``--figure`` draws, for a few images of the split, the
image, its regions and each run's map (ground-truth box red, the largest
contour's box at the run's threshold green) and, for MoANA runs, MoANA's
attention M (mean over channels) on that image.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from irnet_moana import io
from irnet_moana.config import load_config
from irnet_moana.data.synthetic import cub_demo_scene
from irnet_moana.figures.drawing import Row, colour_labels, draw_grid, legend_entries, overlay, save_figure
from irnet_moana.figures.moana_attention import moana_views
from irnet_moana.figures.wsol_examples import draw_tile, example_ids
from irnet_moana.models.build import wsol_net, wsol_weights
from irnet_moana.outputs import EVAL_WSOL, METRICS, WSOL, WSOL_SCOREMAPS
from irnet_moana.training import load_weights
from irnet_moana.wsol.boxes import (RESIZE_LENGTH, boxes_from_scoremap, normalize_scoremap, quantize_scoremap,
                                    resize_boxes)
from irnet_moana.wsol.data import ImageRoot
from irnet_moana.wsol.evaluation import load_scoremap
from irnet_moana.wsol.metadata import read_metadata

REGIONS = ("part", "body", "background")  # body: the object without its part
BACKGROUND, BODY, PART = 0, 1, 2  # values of the region map
COLUMNS = ([f"mass {r}" for r in REGIONS] + [f"mean {r}" for r in REGIONS]
           + ["mask on object", "object covered", "peak on part"])


def region_map(image_id: str, seed: int, num_classes: int, image_size: int) -> np.ndarray:
    """(224, 224) uint8: 0 background, 1 body without part, 2 part, in the evaluation frame."""
    instance = cub_demo_scene(image_id, seed, num_classes, image_size).instances[0]
    regions = np.zeros(instance.mask.shape, dtype=np.uint8)
    regions[instance.mask] = BODY
    regions[instance.part] = PART
    return cv2.resize(regions, (RESIZE_LENGTH, RESIZE_LENGTH), interpolation=cv2.INTER_NEAREST)


def box_mask(scoremap: np.ndarray, threshold: float) -> np.ndarray:
    """The pixels the box extraction keeps at ``threshold`` (wsol.boxes.boxes_at_thresholds' rule)."""
    image = quantize_scoremap(scoremap)
    return image > int(threshold * int(image.max()))


def image_stats(scoremap: np.ndarray, regions: np.ndarray, threshold: float) -> np.ndarray:
    """One image's values in the order of COLUMNS (shares in percent)."""
    masks = [regions == PART, regions == BODY, regions == BACKGROUND]
    total = max(float(scoremap.sum()), 1e-12)
    mass = [100 * float(scoremap[m].sum()) / total for m in masks]
    mean = [float(scoremap[m].mean()) if m.any() else np.nan for m in masks]
    kept, obj = box_mask(scoremap, threshold), regions != BACKGROUND
    on_object = 100 * float((kept & obj).sum()) / max(int(kept.sum()), 1)
    covered = 100 * float((kept & obj).sum()) / int(obj.sum())
    peak_on_part = 100.0 * (regions.flat[int(np.argmax(scoremap))] == PART)
    return np.array(mass + mean + [on_object, covered, peak_on_part])


def run_config(run_dir: Path) -> dict:
    """The settings the run was evaluated (else trained) with, as its logs recorded them."""
    for stage in ("eval_wsol", "train_wsol"):
        path = run_dir / "logs" / f"{stage}.config.yaml"
        if path.is_file():
            return load_config(path)
    raise SystemExit(f"{run_dir}: no logs/eval_wsol.config.yaml or train_wsol.config.yaml; not a WSOL run")


def run_label(cfg: dict) -> str:
    w = cfg["wsol"]
    return f"MoANA ({w['moana_calibration']})" if w["moana"] else "plain CAM"


def analyse(run_dir: Path, split: str, data_seed: int, regions_cache: dict) -> dict:
    cfg = run_config(run_dir)
    w = cfg["wsol"]
    metrics = io.read_json(run_dir / METRICS / EVAL_WSOL)
    threshold = float(metrics["threshold"])
    metadata = read_metadata(Path(w["metadata_root"]) / split)
    map_dir = run_dir / WSOL / WSOL_SCOREMAPS / split
    rows = []
    for image_id in metadata.image_ids:
        if image_id not in regions_cache:
            width, _ = metadata.image_sizes[image_id]
            regions_cache[image_id] = region_map(image_id, data_seed, w["num_classes"], width)
        scoremap = normalize_scoremap(load_scoremap(map_dir, image_id))
        rows.append(image_stats(scoremap, regions_cache[image_id], threshold))
    per_image = np.stack(rows)
    return {"run_dir": str(run_dir), "label": run_label(cfg), "split": split, "threshold": threshold,
            "threshold_split": metrics["threshold_split"], "num_images": len(rows),
            "metrics_split": metrics["split"], "cfg": cfg,
            "values": dict(zip(COLUMNS, np.nanmean(per_image, axis=0).tolist()))}


def check_scenes(image_root: str, image_ids: list[str], data_seed: int, num_classes: int) -> None:
    """Fail when the re-rendered scenes are not the images on disk (another --data-seed wrote them)."""
    images = ImageRoot(image_root)
    for image_id in image_ids[:3]:
        on_disk = images.load_image(image_id).astype(np.float64)
        rendered = cub_demo_scene(image_id, data_seed, num_classes, on_disk.shape[1]).image.astype(np.float64)
        if np.abs(on_disk - rendered).mean() > 4.0:
            raise SystemExit(f"{image_id}: the scene re-rendered with --data-seed {data_seed} is not the image on "
                             f"disk (mean difference {np.abs(on_disk - rendered).mean():.1f} grey levels); "
                             "give the seed prepare_data.py demo-wsol used")


def table(results: list[dict]) -> str:
    head = f"{'run':<34} {'model':<18} {'thr':>5} " + " ".join(f"{c:>10}" for c in
                                                                ["part %", "body %", "bg %", "part", "body", "bg",
                                                                 "on obj %", "obj cov %", "peak part%"])
    lines = ["mass: share of the normalised map on each region; mean: mean normalised activation there; box mask at "
             "the run's threshold: share on the object (body + part), share of the object covered",
             f"{'':<34} {'':<18} {'':>5}  {' mass (% of map) ':-^32} {' mean activation ':-^32} "
             f"{' box mask ':-^21}", head]

    def line(name: str, model: str, threshold: str, values: dict) -> str:
        cells = [f"{values[c]:10.3f}" if c.startswith("mean") else f"{values[c]:10.1f}"
                 for c in COLUMNS]
        return f"{name:<34} {model:<18} {threshold:>5} " + " ".join(cells)

    for r in results:
        lines.append(line(r["run_dir"][-34:], r["label"], f"{r['threshold']:g}", r["values"]))
    if len(results) > 1:
        mean = {c: float(np.mean([r["values"][c] for r in results])) for c in COLUMNS}
        labels = sorted({r["label"] for r in results})
        lines.append(line(f"mean over {len(results)} runs", labels[0] if len(labels) == 1 else "mixed", "", mean))
    return "\n".join(lines)


def area_line(regions_cache: dict) -> str:
    shares = np.mean([[100 * float((m == v).mean()) for v in (PART, BODY, BACKGROUND)]
                      for m in regions_cache.values()], axis=0)
    return (f"area (a flat map's mass): part {shares[0]:.1f} %, body {shares[1]:.1f} %, background {shares[2]:.1f} % "
            f"of the image, mean over {len(regions_cache)} images")


@torch.no_grad()
def attention_map(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """MoANA's M averaged over channels (moana_views), at the feature map's resolution."""
    return moana_views(model, image, torch.device("cpu"))["M"]


def draw_figure(results: list[dict], split: str, regions_cache: dict, num_images: int) -> np.ndarray:
    cfg = results[0]["cfg"]
    w = cfg["wsol"]
    metadata = read_metadata(Path(w["metadata_root"]) / split)
    images = ImageRoot(w["image_root"])
    # Evenly spaced over the split; the ids are listed class by class, so several classes.
    image_ids = example_ids(metadata.image_ids, num_images)
    models = {}
    for r in results:
        if r["cfg"]["wsol"]["moana"]:
            model = wsol_net(r["cfg"], weights="none")
            load_weights(wsol_weights(Path(r["run_dir"])), model)
            models[r["run_dir"]] = model.eval()
    columns = ["image", "part (green), body (red)"]
    for r in results:
        name = Path(r["run_dir"]).name
        columns.append(f"{r['label']}, {name}" if r["label"].endswith("CAM") else f"{r['label']} CAM, {name}")
        if r["run_dir"] in models:
            columns.append(f"M (channel mean), {name}")
    rows = []
    for image_id in image_ids:
        image = cv2.resize(images.load_image(image_id), (RESIZE_LENGTH, RESIZE_LENGTH), interpolation=cv2.INTER_LINEAR)
        regions = regions_cache[image_id]
        gt = resize_boxes(metadata.boxes[image_id], metadata.image_sizes[image_id])
        cells = [image, colour_labels(regions)]
        notes = []
        for r in results:
            scoremap = normalize_scoremap(load_scoremap(Path(r["run_dir"]) / WSOL / WSOL_SCOREMAPS / split, image_id))
            stats = dict(zip(COLUMNS, image_stats(scoremap, regions, r["threshold"])))
            _, largest = boxes_from_scoremap(scoremap, r["threshold"])
            caption = (f"mass part {stats['mass part']:.0f}% body {stats['mass body']:.0f}% "
                       f"bg {stats['mass background']:.0f}%")
            cells.append(draw_tile(image, scoremap, gt, largest, caption))
            if r["run_dir"] in models:
                m = attention_map(models[r["run_dir"]], images.load_image(image_id))
                span = float(m.max() - m.min())
                heat = cv2.resize(((m - m.min()) / max(span, 1e-12)).astype(np.float32),
                                  (RESIZE_LENGTH, RESIZE_LENGTH), interpolation=cv2.INTER_LINEAR)
                cells.append(overlay(image, heat))
                on_part = 100 * float(heat[regions == PART].sum() / max(float(heat.sum()), 1e-12))
                notes.append(f"M {m.min():.2f}-{m.max():.2f} (colours span this range), {on_part:.0f}% of it on the "
                             "part")
        rows.append(Row(f"{image_id}" + (f"; {'; '.join(notes)}" if notes else ""),
                        (cells[2].shape[0], RESIZE_LENGTH), cells))
    title = (f"demo-wsol {split}: where the activation sits. CAM tiles: GT box red, box at the run's threshold green "
             f"(chosen on {results[0]['threshold_split']}), mass shares of the normalised map")
    legend = legend_entries({BACKGROUND, BODY, PART}, ["background", "body without part", "part"])
    return np.asarray(draw_grid(title, columns, rows, legend))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--split", default="val", help="split whose saved score maps are read (default val)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed prepare_data.py demo-wsol drew the set with")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--figure", type=Path, help="draw the figure (PNG) for the runs given, in their order")
    parser.add_argument("--num-images", type=int, default=4, help="images in the figure")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    regions_cache: dict[str, np.ndarray] = {}
    results = [analyse(run_dir, args.split, args.data_seed, regions_cache) for run_dir in args.run_dirs]
    w = results[0]["cfg"]["wsol"]
    check_scenes(w["image_root"], list(regions_cache), args.data_seed, w["num_classes"])
    print(f"split {args.split}, {results[0]['num_images']} images; {area_line(regions_cache)}")
    print(table(results))
    if args.json:
        io.write_json(args.json, [{k: v for k, v in r.items() if k != "cfg"} for r in results])
    if args.figure:
        figure = draw_figure(results, args.split, regions_cache, args.num_images)
        print(f"figure: {save_figure(args.figure, figure)}")
    return results


if __name__ == "__main__":
    main()
