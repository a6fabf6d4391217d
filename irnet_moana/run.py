"""A stage's run context: run directory, logging, seeding, device, provenance."""
from __future__ import annotations

import logging
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from . import config as config_lib
from . import distributed, io
from .outputs import LOGS, PRECISIONS, TIMINGS
from .precision import Precision, choose

PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pillow", "opencv-python-headless",
            "segmentation-models-pytorch", "pydensecrf2", "pyyaml")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # under torchrun each process on a node takes its own GPU, training or per-image stage alike
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise config_lib.ConfigError(f"key 'device' is {name!r} but no CUDA GPU is available; use device=auto or cpu")
    return device


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class Run:
    """What every stage needs: config, its run directory, a logger and a device."""

    cfg: dict
    stage: str
    dir: Path
    device: torch.device
    log: logging.Logger
    precision: Precision | None = None
    started: float = field(default_factory=time.time)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def record(self, filename: str, value: Any) -> None:
        """Set this stage's entry in the run-wide JSON record ``filename`` (main process only)."""
        if distributed.is_main():
            path = self.path(filename)
            entries = io.read_json(path) if io.output_is_valid(path) else {}
            entries[self.stage] = value
            io.write_json(path, entries)

    def finish(self, result_line: str, outputs: Path | str | None = None) -> None:
        """Print where the outputs are and the stage's one-line result; record wall time."""
        seconds = time.time() - self.started
        self.record(TIMINGS, round(seconds, 1))
        if distributed.is_main():
            if outputs is not None:
                self.log.info("outputs: %s", outputs)
            self.log.info("[%s] %s (%.1f s)", self.stage, result_line, seconds)


def start_run(cfg: dict, stage: str, run_dir: str | Path | None = None, precision_key: str | None = None) -> Run:
    """Create the run directory, seed, set up logging and record provenance.

    A stage that runs a network names its precision setting (``cam.amp``,
    ``pseudo.infer_precision``, ...) as ``precision_key``: the precision it
    resolves to is the stage's first line of output, and is recorded in the
    provenance and in ``<run_dir>/precision.json``.
    """
    run_path = Path(run_dir or cfg["run_dir"])
    run_path.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg["seed"])
    device = resolve_device(cfg["device"])
    precision = None
    if precision_key is not None:
        section, name = precision_key.split(".")
        precision = choose(cfg[section][name], device, precision_key)
    log = logging.getLogger(f"irnet_moana.{stage}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    if distributed.is_main():
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        (run_path / LOGS).mkdir(exist_ok=True)
        file_handler = logging.FileHandler(run_path / LOGS / f"{stage}.log")
        file_handler.setFormatter(fmt)
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(file_handler)
        log.addHandler(console)
        if precision is not None:
            log.info("[%s] precision %s (%s)", stage, precision.name, precision.reason)
        io.write_text(run_path / LOGS / f"{stage}.config.yaml", config_lib.dump_config(cfg))
        io.write_json(run_path / LOGS / f"{stage}.provenance.json", {
            "command": [sys.executable, *sys.argv],
            "cwd": os.getcwd(),
            "git_commit": git_commit(),
            "versions": package_versions(),
            "device": str(device),
            "precision": precision.as_dict() if precision else None,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        })
    else:
        log.addHandler(logging.NullHandler())
    run = Run(cfg=cfg, stage=stage, dir=run_path, device=device, log=log, precision=precision)
    if precision is not None:
        run.record(PRECISIONS, precision.as_dict())
    return run


def resolve_weights(value: str, run_dir: Path) -> str:
    """Weights setting with ``{run_dir}`` replaced, so a setting can reuse an earlier stage's file."""
    return value.replace("{run_dir}", str(run_dir))


def pending(stems: Sequence[str], out_dir: Path, suffix: str, log=None) -> list[str]:
    """This rank's share of ``stems`` whose output is missing or unreadable.

    A corrupted output left by something else is removed and redone rather
    than trusted, and so are the temporary files a killed run left behind.
    """
    mine = distributed.shard(stems)
    io.remove_stale_temps(out_dir, {f"{stem}{suffix}" for stem in mine})
    todo = []
    for stem in mine:
        path = out_dir / f"{stem}{suffix}"
        if io.output_is_valid(path):
            continue
        if path.exists():
            if log is not None:
                log.warning("redoing corrupt output %s", path)
            path.unlink()
        todo.append(stem)
    return todo


def progress(items: Iterable | None, total: int, desc: str, initial: int = 0) -> tqdm:
    """A progress bar on the main rank only; ``items`` None for a bar advanced by hand from ``initial``."""
    return tqdm(items, total=total, initial=initial, desc=desc, disable=not distributed.is_main(),
                dynamic_ncols=True, leave=False)
