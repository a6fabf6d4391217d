"""The final segmentation network side by side: architectures x label sources x training seeds.

    python tools/compare_segmenters.py demo --run-dir runs/demo --out runs/demo-segmenters
    python tools/compare_segmenters.py demo --run-dir runs/demo --arch v2 --arch Unet --seeds 0 1

For every architecture (``--arch``: ``v2`` or a segmentation_models_pytorch
one on ``deeplab.encoder``), every label source (the run's pseudo masks and
the dataset's ground truth, ``--gt-labels``, by default
``<data.root>/SegmentationClass``) and every seed, trains and evaluates with
the pipeline's own ``train_deeplab`` and ``eval_deeplab`` stages in
``<out>/<arch>-<labels>-seed<N>`` (resumable: finished runs are kept; the
backbone weights are the setting's ``deeplab.weights`` with ``{run_dir}``
read as ``--run-dir``). Writes ``<out>/comparison.json`` and
``<out>/report.md``: val mIoU (single scale, MS+flip, MS+flip+CRF) as mean
± sample standard deviation per architecture and label source, the pseudo
masks' own mIoU, parameter counts, and training and inference images/s
measured on this machine in the precision ``deeplab.amp`` picks (training
on crops as the stage trains, inference at the size of the first
``deeplab.eval_list`` image; the architectures take turns, so a change in
load shifts all alike).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Sequence

import torch

from benchmark import machine_info, machine_tag, round_robin
from deeplab import evaluate as eval_deeplab
from deeplab import train as train_deeplab
from deeplab.build import deeplab_net, describe
from deeplab.model import param_groups
from irnet_moana import io
from irnet_moana.cli import add_config_arguments, load, main_guard
from irnet_moana.config import SEGMENTATION_ARCHS
from irnet_moana.data.voc import VOCData
from irnet_moana.metrics import format_mean_std, mean_std
from irnet_moana.outputs import EVAL_PSEUDO_MASKS, METRICS, PSEUDO_MASKS, seed_run
from irnet_moana.precision import choose
from irnet_moana.run import resolve_weights
from irnet_moana.training import autocast

SETTINGS = tuple(eval_deeplab.SETTINGS.values())
SETTING_NAMES = {"single_scale": "ss", "multi_scale_flip": "MS+flip", "multi_scale_flip_crf": "MS+flip+CRF"}


def run_config(cfg: dict, source_run: Path, arch: str, source: str, labels: Path, seed: int, out: Path) -> dict:
    """One training: ``arch`` on the label folder ``labels`` (named ``source``) with ``seed``, in
    ``<out>/<arch>-<source>-seed<N>``; backbone weights as ``deeplab.weights`` says, ``{run_dir}`` read as
    ``source_run``."""
    run = copy.deepcopy(cfg)
    d = run["deeplab"]
    d["arch"], d["labels"] = arch, str(labels)
    d["weights"] = resolve_weights(d["weights"], source_run)
    run["seed"] = seed
    run["run_dir"] = str(out / f"{arch}-{source}-{seed_run(seed)}")
    return run


def throughput(cfg: dict, archs: Sequence[str], num_classes: int, image_size: tuple[int, int],
               steps: int = 6) -> dict[str, dict]:
    """Parameters and images/s of each architecture: training steps (forward, backward, SGD step on a batch of
    ``deeplab.batch_size`` crops of ``deeplab.crop_size``) and single-scale inference on images of
    ``image_size``, in the precision ``deeplab.amp`` picks, random weights, the architectures taking turns."""
    d = cfg["deeplab"]
    device = torch.device("cpu")
    precision = choose(d["amp"], device, "deeplab.amp")
    generator = torch.Generator().manual_seed(0)
    crops = torch.randn(d["batch_size"], 3, d["crop_size"], d["crop_size"], generator=generator)
    targets = torch.randint(0, num_classes + 1, (d["batch_size"], d["crop_size"], d["crop_size"]), generator=generator)
    image = torch.randn(1, 3, *image_size, generator=generator)
    names = {}
    methods_train, methods_infer = {}, {}
    for arch in archs:
        arch_cfg = copy.deepcopy(cfg)
        arch_cfg["deeplab"].update(arch=arch, weights="none")
        model = deeplab_net(arch_cfg, num_classes)
        names[arch] = {"network": describe(arch_cfg), "parameters": sum(p.numel() for p in model.parameters())}
        optimizer = torch.optim.SGD(param_groups(model, d["lr"], d["weight_decay"]), lr=d["lr"],
                                    momentum=d["momentum"])
        output_names = model.output_names()

        def train_step(_: int, model=model, optimizer=optimizer, output_names=output_names) -> None:
            model.train()
            with autocast(device, precision):
                outputs = model(crops)
            loss, _ = train_deeplab.segmentation_loss(outputs, targets, output_names)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        @torch.no_grad()
        def infer(_: int, model=model) -> None:
            model.eval()
            with autocast(device, precision):
                model(image)

        methods_train[arch], methods_infer[arch] = train_step, infer
    train_seconds = round_robin(methods_train, steps)
    infer_seconds = round_robin(methods_infer, steps * d["batch_size"])
    return {arch: {**names[arch], "infer_image_size": list(image_size),
                   "train_images_per_s": round(steps * d["batch_size"] / train_seconds[arch], 1),
                   "infer_images_per_s": round(steps * d["batch_size"] / infer_seconds[arch], 1),
                   "precision": precision.name}
            for arch in archs}


def compare(cfg: dict, source_run: Path, archs: Sequence[str], seeds: Sequence[int], gt_labels: Path,
            out: Path, throughput_steps: int = 6) -> dict:
    """Train and evaluate every (architecture, label source, seed); returns the figures written to
    ``<out>/comparison.json``."""
    data = VOCData(cfg["data"]["root"])
    first_val_image = data.load_image(data.split(cfg["deeplab"]["eval_list"])[0])
    sources = {"pseudo": source_run / PSEUDO_MASKS, "gt": gt_labels}
    rows = []
    for arch in archs:
        for name, labels in sources.items():
            per_seed = {}
            for seed in seeds:
                run = run_config(cfg, source_run, arch, name, labels, seed, out)
                start = time.perf_counter()
                train_deeplab.run(run)
                per_seed[seed] = eval_deeplab.run(run)
                print(f"[compare] {arch} on {name} labels, seed {seed}: "
                      f"{eval_deeplab.result_line(per_seed[seed])} ({time.perf_counter() - start:.0f} s)")
            row = {"arch": arch, "labels": name, "label_folder": str(labels), "seeds": list(seeds)}
            for setting in SETTINGS:
                values = [per_seed[s].get(setting, {}).get("miou") for s in seeds]
                mean, std = mean_std(values)
                row[setting] = {"per_seed": values, "mean": mean, "std": std}
            rows.append(row)
    pseudo_path = source_run / METRICS / EVAL_PSEUDO_MASKS
    pseudo = io.read_json(pseudo_path)["miou"] if io.output_is_valid(pseudo_path) else None
    networks = throughput(cfg, archs, data.num_classes, first_val_image.shape[:2], throughput_steps)
    return {"rows": rows, "pseudo_mask_miou": pseudo, "networks": networks, "machine": machine_info(),
            "source_run": str(source_run)}


def report(result: dict) -> str:
    """The comparison as Markdown: one row per architecture and label source, then the networks' costs."""
    lines = ["# Final segmentation network: side by side", "",
             f"Labels: the pseudo masks of `{result['source_run']}`"
             + (f" (mIoU {result['pseudo_mask_miou']:.1f} on their images)" if result["pseudo_mask_miou"] else "")
             + " and the ground truth. Val mIoU, mean ± sample standard deviation over training seeds "
             + f"{result['rows'][0]['seeds']}.", "",
             "| network | labels | " + " | ".join(SETTING_NAMES[s] for s in SETTINGS) + " | per seed (MS+flip+CRF) |",
             "|---|---|" + "---|" * len(SETTINGS) + "---|"]
    for row in result["rows"]:
        cells = [format_mean_std(row[s]["mean"], row[s]["std"]).strip() if row[s]["mean"] is not None else "-"
                 for s in SETTINGS]
        seeds = ", ".join("-" if v is None else f"{v:.1f}" for v in row["multi_scale_flip_crf"]["per_seed"])
        lines.append(f"| {result['networks'][row['arch']]['network']} | {row['labels']} | " + " | ".join(cells)
                     + f" | {seeds} |")
    lines += ["", f"Cost on {machine_tag(result['machine'])} (random weights, deeplab.amp's precision):", "",
              "| network | parameters (M) | training images/s | inference images/s |", "|---|---|---|---|"]
    for network in result["networks"].values():
        lines.append(f"| {network['network']} | {network['parameters'] / 1e6:.1f} | "
                     f"{network['train_images_per_s']} ({network['precision']}) | "
                     f"{network['infer_images_per_s']} ({network['precision']}, "
                     f"{'x'.join(map(str, network['infer_image_size']))} px) |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse the command line, run the comparison, write comparison.json and report.md; returns the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--arch", action="append", default=None, choices=SEGMENTATION_ARCHS, metavar="ARCH",
                        help="deeplab.arch to compare (repeatable; default: v2 and DeepLabV3Plus; one of "
                             + ", ".join(SEGMENTATION_ARCHS) + ")")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="N",
                        help="training seeds (default: %(default)s)")
    parser.add_argument("--gt-labels", type=Path, default=None, metavar="DIR",
                        help="ground-truth label PNGs (default: <data.root>/SegmentationClass)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where the trainings and the report go (default: <run dir>-segmenters)")
    parser.add_argument("--throughput-steps", type=int, default=6, metavar="N",
                        help="timed training steps per network; inference is timed on N x batch_size images "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    cfg = load(parser, args)
    source_run = Path(cfg["run_dir"])
    if not (source_run / PSEUDO_MASKS).is_dir():
        parser.error(f"{source_run / PSEUDO_MASKS} does not exist: give --run-dir a run whose pseudo masks are made")
    gt_labels = args.gt_labels or Path(cfg["data"]["root"]) / "SegmentationClass"
    out = args.out or source_run.with_name(source_run.name + "-segmenters")
    result = compare(cfg, source_run, args.arch or ["v2", "DeepLabV3Plus"], args.seeds, gt_labels, out,
                     args.throughput_steps)
    text = report(result)
    io.write_json(out / "comparison.json", result)
    io.write_text(out / "report.md", text)
    print(text)
    print(f"wrote {out / 'comparison.json'} and {out / 'report.md'}")
    return result


if __name__ == "__main__":
    main_guard(main)
