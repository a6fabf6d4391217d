"""End-to-end orchestration: the stages of each setting, pre-flight checks, summary and report.

Every stage skips the work whose outputs are already complete, so running a
setting again after an interruption continues where it stopped; training
stages always resume from their last checkpoint.
"""
from __future__ import annotations

import copy
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torchvision import models

from deeplab import evaluate as eval_deeplab
from deeplab import train as train_deeplab

from . import io
from .config import dump_config, load_config
from .data.synthetic import generate_voc_demo, prepare_cub_demo
from .data.voc import LIST_DIR, check_layout
from .metrics import format_mean_std, mean_std
from .models.backbone import ARCHS
from .outputs import (EVAL_CAMS, EVAL_DEEPLAB, EVAL_INSTANCES, EVAL_MASKRCNN, EVAL_PSEUDO_MASKS, EVAL_WSOL, FIGURES,
                      METRICS, PLAIN_CAM, PRECISIONS, REPORT, SUMMARY, TIMINGS, seed_run)
from .run import package_versions
from .stages import (eval_cams, eval_instances, eval_masks, eval_wsol, make_cams, make_instance_masks, make_ir_labels,
                     make_pseudo_masks, train_cam, train_irn, train_maskrcnn, train_wsol, visualize)


class MissingRequirements(RuntimeError):
    """What a setting needs and does not have, with the commands that provide it."""


def _same(cfg: dict) -> dict:
    return cfg


@dataclass
class Stage:
    name: str
    action: Callable[[dict], Any]
    outputs: tuple[str, ...]  # paths under the run directory that --force removes
    config: Callable[[dict], dict] = _same  # the setting's configuration as this stage runs it
    note: str = ""  # printed beside the name, e.g. which network of a comparison it is


def _prepare_demo(cfg: dict) -> None:
    root = Path(cfg["data"]["root"])
    if (root / LIST_DIR / "train_aug.txt").is_file():
        print(f"[prepare] demo data present at {root}")
        return
    summary = generate_voc_demo(root, seed=cfg["seed"])
    print(f"[prepare] generated the synthetic benchmark in {root}: {summary['train_aug']} train_aug, "
          f"{summary['val']} val images")


def _prepare_demo_wsol(cfg: dict) -> None:
    metadata = Path(cfg["wsol"]["metadata_root"])
    splits = ("train", cfg["wsol"]["threshold_split"], cfg["wsol"]["eval_split"])
    if all((metadata / split / "image_ids.txt").is_file() for split in splits):
        print(f"[prepare] demo WSOL data present at {metadata}")
        return
    root = Path(cfg["wsol"]["image_root"]).parent
    summary = prepare_cub_demo(root, metadata, seed=cfg["seed"])
    print(f"[prepare] generated the synthetic CUB-style set in {root}, metadata in {metadata}: "
          + ", ".join(f"{count} {split}" for split, count in summary["metadata"].items()))


def _optional_maskrcnn() -> Callable[[dict], None]:
    def action(cfg: dict) -> None:
        if cfg["maskrcnn"]["enabled"]:
            train_maskrcnn.run(cfg, resume=True)
        else:
            print("[train_maskrcnn] off (maskrcnn.enabled=false); --set maskrcnn.enabled=true runs it")
    return action


def wsss_stages(with_baseline: bool, prepare: Callable[[dict], None] | None = None) -> list[Stage]:
    stages = [Stage("prepare", prepare, ())] if prepare else []
    if with_baseline:
        stages += [
            Stage("train_cam_plain", lambda c: train_cam.run(c, resume=True), train_cam.OUTPUTS, *PLAIN),
            Stage("make_cams_plain", make_cams.run, make_cams.OUTPUTS, *PLAIN),
            Stage("eval_cams_plain", eval_cams.run, eval_cams.OUTPUTS, *PLAIN),
        ]
    stages += [
        Stage("train_cam", lambda c: train_cam.run(c, resume=True), train_cam.OUTPUTS),
        Stage("make_cams", make_cams.run, make_cams.OUTPUTS),
        Stage("eval_cams", eval_cams.run, eval_cams.OUTPUTS),
        Stage("make_ir_labels", make_ir_labels.run, make_ir_labels.OUTPUTS),
        Stage("train_irn", lambda c: train_irn.run(c, resume=True), train_irn.OUTPUTS),
        Stage("make_pseudo_masks", make_pseudo_masks.run, make_pseudo_masks.OUTPUTS),
        Stage("eval_masks", eval_masks.run, eval_masks.OUTPUTS),
        Stage("make_instance_masks", make_instance_masks.run, make_instance_masks.OUTPUTS),
        Stage("eval_instances", eval_instances.run, eval_instances.OUTPUTS),
        Stage("train_maskrcnn", _optional_maskrcnn(), train_maskrcnn.OUTPUTS),
        Stage("train_deeplab", lambda c: train_deeplab.run(c, resume=True), train_deeplab.OUTPUTS),
        Stage("eval_deeplab", eval_deeplab.run, eval_deeplab.OUTPUTS),
        Stage("visualize", visualize.run, visualize.OUTPUTS),
    ]
    return stages


def seeded_config(cfg: dict, seed: int) -> dict:
    """One of several training runs: ``seed``, in ``<run_dir>/seed<seed>``."""
    run = copy.deepcopy(cfg)
    run["seed"] = seed
    run["run_dir"] = str(Path(cfg["run_dir"]) / seed_run(seed))
    return run


def _seeded(network: Callable[[dict], dict], seed: int) -> Callable[[dict], dict]:
    return lambda cfg: seeded_config(network(cfg), seed)


def seed_dirs(run_dir: Path, cfg: dict) -> list[Path]:
    """The run directories of the WSOL networks: one per ``wsol.seeds`` entry, or ``run_dir`` itself."""
    return [run_dir / seed_run(seed) for seed in cfg["wsol"]["seeds"]] or [run_dir]


def wsol_stages(cfg: dict, with_baseline: bool, prepare: Callable[[dict], None] | None = None) -> list[Stage]:
    """Train and evaluate (the plain CAM, then) MoANA, once per ``wsol.seeds`` entry or once with ``seed``."""
    stages = [Stage("prepare", prepare, ())] if prepare else []
    networks = ([("_plain", baseline_config, PLAIN[1])] if with_baseline else []) + [("", _same, "")]
    for suffix, network, note in networks:
        for seed in cfg["wsol"]["seeds"] or [None]:
            if seed is None:
                name, variant, label = suffix, network, note
            else:
                name, label = f"{suffix}_seed{seed}", ", ".join(filter(None, [note, f"seed {seed}"]))
                variant = _seeded(network, seed)
            stages += [
                Stage(f"train_wsol{name}", lambda c: train_wsol.run(c, resume=True), train_wsol.OUTPUTS, variant,
                      label),
                Stage(f"eval_wsol{name}", eval_wsol.run, eval_wsol.OUTPUTS, variant, label),
            ]
    return stages


@dataclass
class Setting:
    """A setting file of the same name (irnet_moana/configs/<name>.yaml) and the stages it runs."""
    kind: str  # wsss | wsol
    stages: Callable[[dict], list[Stage]] = field(repr=False)


SETTINGS: dict[str, Setting] = {
    "demo": Setting("wsss", lambda cfg: wsss_stages(True, _prepare_demo)),
    "voc12": Setting("wsss", lambda cfg: wsss_stages(False)),
    "voc12-moana": Setting("wsss", lambda cfg: wsss_stages(False)),
    "demo-wsol": Setting("wsol", lambda cfg: wsol_stages(cfg, True, _prepare_demo_wsol)),
    "cub": Setting("wsol", lambda cfg: wsol_stages(cfg, False)),
    "ilsvrc": Setting("wsol", lambda cfg: wsol_stages(cfg, False)),
}


def baseline_config(cfg: dict) -> dict:
    """The plain-CAM baseline: the same setting with MoANA off, in its own run directory."""
    base = copy.deepcopy(cfg)
    base["run_dir"] = str(Path(cfg["run_dir"]) / PLAIN_CAM)
    base["cam"]["moana"] = False
    base["cam"]["infer_list"] = cfg["data"]["eval_list"]
    base["wsol"]["moana"] = False
    return base


PLAIN = (baseline_config, "plain CAM baseline")  # a Stage's config and note for the baseline's stages


def _imagenet_file(arch: str) -> Path:
    weights = models.get_model_weights(arch).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _deeplab_backbone(d: dict) -> str:
    return f"resnet{d['depth']}" if d["arch"] == "v2" else d["encoder"]


def _network_reachable(host: str = "download.pytorch.org", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _weights_problems(cfg: dict, kind: str) -> list[str]:
    wanted = []
    if kind == "wsss":
        wanted = [("cam.weights", cfg["cam"]["weights"], cfg["cam"]["backbone"]),
                  ("irn.weights", cfg["irn"]["weights"], cfg["irn"]["backbone"]),
                  ("deeplab.weights", cfg["deeplab"]["weights"], _deeplab_backbone(cfg["deeplab"]))]
        if cfg["maskrcnn"]["enabled"]:
            wanted.append(("maskrcnn.weights", cfg["maskrcnn"]["weights"], "resnet50"))
    else:
        wanted = [("wsol.weights", cfg["wsol"]["weights"], cfg["wsol"]["backbone"])]
    problems, need_network = [], []
    for key, value, arch in wanted:
        if value == "none" or "{run_dir}" in value:
            continue
        if value == "imagenet" and arch in ARCHS:  # smp's other encoders come from smp's own hub
            target = _imagenet_file(arch)
            if not target.is_file():
                need_network.append((key, arch, target))
        elif value != "imagenet" and not Path(value).is_file():
            problems.append(f"{key}: weights file {value} does not exist")
    if need_network and not _network_reachable():
        for key, arch, target in need_network:
            problems.append(f"{key}: ImageNet {arch} weights are not cached and the network is unreachable; "
                            f"copy the file to {target} (or set {key}=/path/to/file.pth)")
    return problems


def _disk_problem(cfg: dict) -> list[str]:
    root = Path(cfg["data"]["root"])
    lists = root / LIST_DIR / f"{cfg['data']['train_list']}.txt"
    if not lists.is_file():
        return []
    count = sum(1 for line in lists.read_text().splitlines() if line.strip())
    # high_res CAMs dominate: about 1.5 classes per image at full size, float32
    sample = next(iter(sorted((root / "JPEGImages").glob("*.jpg"))), None)
    pixels = 500 * 375
    if sample is not None:
        with Image.open(sample) as image:
            pixels = image.width * image.height
    needed = int(count * pixels * 1.5 * 4 * 1.1)
    run_dir = Path(cfg["run_dir"])
    probe = run_dir if run_dir.exists() else next(p for p in [run_dir, *run_dir.parents] if p.exists())
    free = shutil.disk_usage(probe).free
    if free < needed:
        return [f"disk: CAMs of {count} images need about {needed / 2**30:.1f} GiB under {run_dir}, "
                f"only {free / 2**30:.1f} GiB free; free space or pass --run-dir on a larger disk"]
    return []


def check_requirements(setting: str, cfg: dict) -> None:
    """Raise MissingRequirements listing everything the setting lacks, before anything long starts."""
    kind = SETTINGS[setting].kind
    problems: list[str] = []
    if kind == "wsss" and not setting.startswith("demo"):
        layout = check_layout(cfg["data"]["root"])
        if layout:
            problems += layout + [f"get VOC 2012 + SBD with: python pipelines/prepare_data.py voc12 "
                                  f"--root {cfg['data']['root']} --download"]
        elif not (Path(cfg["data"]["root"]) / LIST_DIR / f"{cfg['data']['train_list']}.txt").is_file():
            problems.append(f"list {cfg['data']['train_list']}.txt is missing -> python pipelines/prepare_data.py "
                            f"voc12 --root {cfg['data']['root']} --sbd PATH/benchmark_RELEASE")
        problems += _disk_problem(cfg) if not layout else []
    if kind == "wsol" and not setting.startswith("demo"):
        meta = Path(cfg["wsol"]["metadata_root"])
        for split in ("train", cfg["wsol"]["eval_split"]):
            if not (meta / split / "image_ids.txt").is_file():
                problems.append(f"WSOL metadata {meta / split} is missing -> python pipelines/prepare_data.py "
                                f"{cfg['wsol']['dataset']} --root PATH --out {meta}")
        if not Path(cfg["wsol"]["image_root"]).is_dir():
            problems.append(f"image folder {cfg['wsol']['image_root']} is missing (set wsol.image_root)")
    problems += _weights_problems(cfg, kind)
    if problems:
        raise MissingRequirements(f"setting '{setting}' cannot start; missing:\n  - " + "\n  - ".join(problems))


def select(stages: list[Stage], start: str | None, only: str | None) -> list[Stage]:
    names = [s.name for s in stages]
    for wanted in (start, only):
        if wanted is not None and wanted not in names:
            raise MissingRequirements(f"unknown stage '{wanted}'; stages of this setting: {', '.join(names)}")
    if only:
        return [s for s in stages if s.name == only]
    if start:
        return stages[names.index(start):]
    return stages


def force(stage: Stage, run_dir: Path) -> None:
    for rel in stage.outputs:
        path = run_dir / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    print(f"[{stage.name}] --force: removed its outputs {', '.join(stage.outputs)} under {run_dir}")


def run_setting(setting: str, overrides: list[str], run_dir: str | None = None, start: str | None = None,
                only: str | None = None, forced: tuple[str, ...] = ()) -> dict:
    """Run (or continue) a setting; returns the summary written to metrics.json."""
    if setting not in SETTINGS:
        raise MissingRequirements(f"unknown setting '{setting}'; choose one of {', '.join(SETTINGS)}")
    spec = SETTINGS[setting]
    cfg = load_config(setting, overrides)
    if run_dir:
        cfg["run_dir"] = run_dir
    check_requirements(setting, cfg)
    stages = spec.stages(cfg)
    for name in forced:
        select(stages, name, None)
    started = time.time()
    for stage in select(stages, start, only):
        stage_cfg = stage.config(cfg)
        if stage.name in forced:
            force(stage, Path(stage_cfg["run_dir"]))
        print(f"== {stage.name}{f' ({stage.note})' if stage.note else ''}", flush=True)
        stage.action(stage_cfg)
    summary = summarize(setting, cfg, time.time() - started)
    return summary


def _metric(path: Path, *keys: str) -> float | None:
    if not io.output_is_valid(path):
        return None
    value: Any = io.read_json(path)
    for key in keys:
        if not isinstance(value, dict) or key not in value or value[key] is None:
            return None
        value = value[key]
    return value


WSOL_ROWS = (
    (("MaxBoxAccV2",), "MaxBoxAccV2"),
    *((("MaxBoxAccV2_per_iou", iou), f"MaxBoxAccV2 at IoU {iou}") for iou in ("30", "50", "70")),
    (("gt_known_loc",), "GT-known Loc"),
    (("top1_loc",), "Top-1 Loc"),
    (("top5_loc",), "Top-5 Loc"),
    (("top1_cls",), "top-1 classification"),
)


def summary_rows(cfg: dict, kind: str) -> list[tuple[str, float | None, float | None]]:
    """(figure, value, standard deviation over the seeds or None) of a run's metrics files."""
    run_dir = Path(cfg["run_dir"])
    metrics, base = run_dir / METRICS, run_dir / PLAIN_CAM / METRICS
    if kind == "wsss":
        return [(name, value, None) for name, value in [
            ("seed mIoU, plain CAM", _metric(base / EVAL_CAMS, "miou")),
            ("seed mIoU, MoANA", _metric(metrics / EVAL_CAMS, "miou")),
            ("pseudo-mask mIoU", _metric(metrics / EVAL_PSEUDO_MASKS, "miou")),
            ("instance mAP^r 50, IRNet", _metric(metrics / EVAL_INSTANCES, "irnet", "0.5", "map")),
            ("instance mAP^r 75, IRNet", _metric(metrics / EVAL_INSTANCES, "irnet", "0.75", "map")),
            ("instance mAP^r 50, semantic components",
             _metric(metrics / EVAL_INSTANCES, "baseline", "0.5", "map")),
            ("instance mAP^r 75, semantic components",
             _metric(metrics / EVAL_INSTANCES, "baseline", "0.75", "map")),
            ("instance mAP^r 50 touching same-class, IRNet",
             _metric(metrics / EVAL_INSTANCES, "touching_same_class", "irnet", "0.5", "map")),
            ("instance mAP^r 50 touching same-class, semantic components",
             _metric(metrics / EVAL_INSTANCES, "touching_same_class", "baseline", "0.5", "map")),
            ("Mask R-CNN val mAP^r 50", _metric(metrics / EVAL_MASKRCNN, "maskrcnn", "0.5", "map")),
            ("Mask R-CNN val mAP^r 75", _metric(metrics / EVAL_MASKRCNN, "maskrcnn", "0.75", "map")),
            ("DeepLab val mIoU", _metric(metrics / EVAL_DEEPLAB, "single_scale", "miou")),
            ("DeepLab val mIoU, MS+flip", _metric(metrics / EVAL_DEEPLAB, "multi_scale_flip", "miou")),
            ("DeepLab val mIoU, MS+flip+CRF", _metric(metrics / EVAL_DEEPLAB, "multi_scale_flip_crf", "miou")),
        ]]
    rows = []
    for label, folder in (("plain CAM", run_dir / PLAIN_CAM), ("MoANA", run_dir)):
        files = [d / METRICS / EVAL_WSOL for d in seed_dirs(folder, cfg)]
        for keys, name in WSOL_ROWS:
            rows.append((f"{name}, {label}", *mean_std([_metric(f, *keys) for f in files])))
    # the centre box does not depend on the network: every run scores it alike
    centre = seed_dirs(run_dir, cfg)[0] / METRICS / EVAL_WSOL
    for keys, name in WSOL_ROWS[:5]:
        rows.append((f"{name}, centre-box baseline", _metric(centre, "centre_baseline", *keys), None))
    return rows


def _stage_records(cfg: dict, filename: str) -> dict[str, Any]:
    """A run-wide per-stage record (timings, precisions) of the run, its plain-CAM baseline and their seeds."""
    run_dir = Path(cfg["run_dir"])
    folders = [run_dir / PLAIN_CAM, run_dir, *seed_dirs(run_dir / PLAIN_CAM, cfg), *seed_dirs(run_dir, cfg)]
    records = {}
    for folder in dict.fromkeys(folders):
        if io.output_is_valid(folder / filename):
            prefix = "" if folder == run_dir else f"{folder.relative_to(run_dir)}/"
            records.update({prefix + k: v for k, v in io.read_json(folder / filename).items()})
    return records


def summarize(setting: str, cfg: dict, seconds: float) -> dict:
    """Write runs/<setting>/metrics.json and report.md and print the table."""
    run_dir = Path(cfg["run_dir"])
    kind = SETTINGS[setting].kind
    rows = [row for row in summary_rows(cfg, kind) if row[1] is not None]
    timings, precisions = (_stage_records(cfg, name) for name in (TIMINGS, PRECISIONS))
    summary = {"setting": setting, "metrics": {name: value for name, value, _ in rows},
               "stage_seconds": timings, "stage_precision": precisions,
               "this_invocation_seconds": round(seconds, 1), "versions": package_versions()}
    notes = []
    if kind == "wsol":
        seeds = cfg["wsol"]["seeds"]
        summary["metrics_std"] = {name: std for name, _, std in rows if std is not None}
        summary["seeds"] = seeds or [cfg["seed"]]
        split = _metric(seed_dirs(run_dir, cfg)[0] / METRICS / EVAL_WSOL, "threshold_split")
        summary["threshold_split"] = split
        notes.append(f"localisation threshold chosen on the {split} split"
                     + (f"; mean ± standard deviation over training seeds {seeds}" if len(seeds) > 1 else ""))
    io.write_json(run_dir / SUMMARY, summary)
    width = max([len(n) for n, _, _ in rows] + [10])
    table = "\n".join(f"{name:<{width}}  {format_mean_std(value, std)}" for name, value, std in rows)
    print(f"\nsummary ({setting}, {run_dir})\n" + "".join(f"{note}\n" for note in notes) + table)
    figures = sorted((run_dir / FIGURES).glob("*.png")) if (run_dir / FIGURES).is_dir() else []
    lines = [f"# Run report: {setting}", "", f"Run directory: `{run_dir}`", "", *[f"{note}\n" for note in notes],
             "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {format_mean_std(value, std).strip()} |" for name, value, std in rows]
    lines += ["", "## Wall time per stage (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in timings.items()]
    if precisions:
        lines += ["", "## Precision per stage", "", "| stage | precision | why |", "|---|---|---|"]
        lines += [f"| {k} | {v['precision']} | {v['reason']} |" for k, v in precisions.items()]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f.stem}]({FIGURES}/{f.name})" for f in figures]
    lines += ["", "## Configuration", "", "```yaml", dump_config(cfg).rstrip(), "```", "", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in summary["versions"].items()]
    io.write_text(run_dir / REPORT, "\n".join(lines) + "\n")
    print(f"wrote {run_dir / SUMMARY} and {run_dir / REPORT}")
    return summary
