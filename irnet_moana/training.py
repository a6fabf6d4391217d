"""One training loop for every stage: poly/step schedules, AMP, DDP, checkpoints, resume.

A stage supplies its model, optimizer groups, loader and a ``loss_fn(model,
batch) -> (loss, scalars)``; this module owns everything that must behave the
same everywhere: exact resume at the optimizer-step level, atomic checkpoints,
rank-0 logging, NaN detection and the final weights file that marks the
stage complete.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import distributed, io
from .outputs import CHECKPOINT, MODEL, TENSORBOARD
from .precision import FP32, Precision
from .run import Run, progress
from .sampling import EpochSampler, collate_training

class TrainingError(RuntimeError):
    """Training cannot continue (diverged, incompatible checkpoint, ...)."""


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` (see :mod:`irnet_moana.precision`); a null context for fp32."""
    if not precision.reduced:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype)


def poly_lambda(total_steps: int, power: float = 0.9) -> Callable[[int], float]:
    return lambda step: (1 - min(step, total_steps) / total_steps) ** power


def step_lambda(steps_per_epoch: int, every_epochs: int, factor: float) -> Callable[[int], float]:
    return lambda step: factor ** ((step // steps_per_epoch) // every_epochs)


def architecture_signature(model: nn.Module) -> dict[str, list[int]]:
    """Parameter and buffer names with shapes: what a checkpoint must match to be loadable."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def check_compatible(path: Path, saved: dict[str, list[int]], model: nn.Module) -> None:
    expected = architecture_signature(model)
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    wrong = sorted(k for k in set(saved) & set(expected) if saved[k] != expected[k])
    if missing or unexpected or wrong:
        details = []
        if wrong:
            details.append(f"shape mismatch for {wrong[:3]} (e.g. {wrong[0]}: file {saved[wrong[0]]} "
                           f"vs model {expected[wrong[0]]})")
        if missing:
            details.append(f"missing {missing[:3]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}")
        raise TrainingError(f"{path} was saved from another architecture or number of classes: "
                            f"{'; '.join(details)}. Use a checkpoint of this setting or delete it to start over.")


def load_state(path: Path) -> dict[str, Any]:
    """Read a checkpoint without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise TrainingError(f"{path}: unreadable checkpoint ({exc}); delete it to retrain") from exc


def save_state(path: Path, state: dict[str, Any]) -> None:
    with io.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_weights(path: str | Path, model: nn.Module) -> None:
    """Load a stage's final weights into ``model`` after checking the architecture matches."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"weights {path} do not exist; run the training stage first")
    state = load_state(path)
    if "model" not in state or "signature" not in state:
        raise TrainingError(f"{path} is not a weights file written by this toolkit")
    check_compatible(path, state["signature"], model)
    model.load_state_dict(state["model"])


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass
class TrainSpec:
    """How long and how a stage trains."""

    batch_size: int
    epochs: int = 0
    max_steps: int = 0  # > 0: train for this many optimizer steps instead of ``epochs``
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch only
    num_workers: int = 0
    log_every: int = 10
    # samples -> batch; a batch is a dict with "name" and "skipped" lists (see collate_training)
    collate: Callable[[list], dict] = collate_training


def make_loader(dataset, spec: TrainSpec, seed: int) -> tuple[DataLoader, EpochSampler]:
    sampler = EpochSampler(len(dataset), spec.batch_size, seed)
    loader = DataLoader(dataset, batch_size=spec.batch_size, sampler=sampler, num_workers=spec.num_workers,
                        collate_fn=spec.collate, drop_last=False, persistent_workers=False)
    return loader, sampler


def total_steps(spec: TrainSpec, steps_per_epoch: int) -> int:
    return spec.max_steps if spec.max_steps > 0 else spec.epochs * steps_per_epoch


def fit(run: Run, model: nn.Module, param_groups: Iterable[dict], dataset, spec: TrainSpec,
        loss_fn: Callable[[nn.Module, dict], tuple[torch.Tensor, dict[str, float]]],
        momentum: float, weight_decay: float, schedule: Callable[[int, int], Callable[[int], float]],
        out_dir: Path, resume: bool, after_training: Callable[[nn.Module], None] | None = None) -> Path:
    """Train with SGD until the configured number of steps; returns the final weights path.

    ``schedule(total_steps, steps_per_epoch)`` gives the LR multiplier per step.
    ``after_training(model)`` runs before the final weights are written (for
    statistics measured on the trained model), so they are never saved without it.
    A checkpoint holds model, optimizer, scheduler, step and the architecture
    signature; ``resume`` continues from it exactly. Without ``resume`` an
    existing checkpoint is an error, so no work is overwritten by accident.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    final_path, ckpt_path = out_dir / MODEL, out_dir / CHECKPOINT
    if distributed.is_main():
        io.remove_stale_temps(out_dir)  # left by a run killed while writing; only this stage writes here
    if final_path.is_file():
        load_weights(final_path, model)
        run.log.info("%s exists: training already finished", final_path)
        return final_path
    model.to(run.device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(list(param_groups), lr=0.0, momentum=momentum, weight_decay=weight_decay)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    loader, sampler = make_loader(dataset, spec, run.cfg["seed"])
    steps = total_steps(spec, sampler.steps_per_epoch)
    if steps <= 0:
        raise TrainingError("nothing to train: epochs and max_steps are both 0")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(steps, sampler.steps_per_epoch))
    step = 0
    skipped: list[str] = []
    if ckpt_path.exists():
        if not resume:
            raise TrainingError(f"{ckpt_path} exists from an earlier run; pass --resume to continue it, "
                                f"or delete {out_dir} to start over")
        state = load_state(ckpt_path)
        check_compatible(ckpt_path, state["signature"], model)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:  # layers that draw random numbers (dropout) continue the same sequence
            torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and run.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], run.device)
        step = int(state["step"])
        skipped = list(state.get("skipped_images", []))
        run.log.info("resumed from %s at step %d/%d", ckpt_path, step, steps)
    distributed_run = distributed.init_distributed(run.device)
    train_model: nn.Module = model
    if distributed_run:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    precision = run.precision or FP32
    scaler = torch.amp.GradScaler("cuda", enabled=precision.name == "fp16")
    writer = _tensorboard(out_dir) if distributed.is_main() else None
    bar = progress(None, steps, run.stage, initial=step)

    def checkpoint(names: list[str]) -> None:
        # A loss can stay finite for the step whose update breaks the weights:
        # never let such weights replace the last good checkpoint.
        broken = non_finite_tensor(model)
        if broken is not None:
            raise diverged(f"weights ({broken}) became non-finite", step, names, ckpt_path)
        if distributed.is_main():
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "step": step, "rng": torch.get_rng_state(),
                     "signature": architecture_signature(model), "skipped_images": sorted(set(skipped))}
            if run.device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state(run.device)
            save_state(ckpt_path, state)

    train_model.train()
    while step < steps:
        epoch = step // sampler.steps_per_epoch
        sampler.set_epoch(epoch, step % sampler.steps_per_epoch)
        for batch in loader:
            if batch["skipped"]:
                skipped.extend(batch["skipped"])
                run.log.warning("skipping unreadable training image(s) %s", batch["skipped"])
            with autocast(run.device, precision):
                loss, scalars = loss_fn(train_model, _to_device(batch, run.device))
            if not torch.isfinite(loss.detach()).all():
                raise diverged(f"loss is {loss.item()}", step + 1, batch["name"], ckpt_path)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            bar.update(1)
            if writer is not None and (step % spec.log_every == 0 or step == steps):
                writer.add_scalar("train/loss", loss.item(), step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                for name, value in scalars.items():
                    writer.add_scalar(f"train/{name}", value, step)
                run.log.info("step %d/%d loss %.4f lr %.3g %s", step, steps, loss.item(),
                             optimizer.param_groups[0]["lr"], " ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
            end_of_epoch = step % sampler.steps_per_epoch == 0
            if end_of_epoch or step == steps or (spec.checkpoint_every and step % spec.checkpoint_every == 0):
                checkpoint(batch["name"])
            if step >= steps:
                break
    bar.close()
    if writer is not None:
        writer.close()
    unreadable = sorted(set(skipped))
    if unreadable:
        run.log.warning("skipped %d unreadable image(s) during training: %s", len(unreadable), unreadable)
    if after_training is not None:
        after_training(model)
    if distributed.is_main():
        save_state(final_path, {"model": model.state_dict(), "signature": architecture_signature(model),
                                "steps": step, "skipped_images": unreadable})
    distributed.barrier()
    return final_path


def non_finite_tensor(model: nn.Module) -> str | None:
    """Name of the first parameter or floating-point buffer holding NaN or inf, else None."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return name
    return None


def diverged(what: str, step: int, names: list[str], ckpt_path: Path) -> TrainingError:
    """The error that stops a diverged run: step, images and the checkpoint to go back to."""
    last = ckpt_path if ckpt_path.exists() else "none (no checkpoint written yet)"
    return TrainingError(f"{what} at step {step} on images {names}; last good checkpoint: {last}. "
                         "Lower the learning rate or check these images.")


def _to_device(batch: dict, device: torch.device) -> dict:
    """Move tensors; images go channels-last, which the convolutions run fastest in (bf16 on CPU most of all)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if key == "image":
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def _tensorboard(out_dir: Path):
    # Deferred: importing TensorBoard takes about 2 s, which the inference stages and the tests do not need.
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out_dir / TENSORBOARD))

