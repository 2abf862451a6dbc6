"""Making a saliency fingerprint set: candidates, the optimisation of eq. 4 on the shared projected-gradient
optimiser, pool selection, thresholds, and the join of a white-box and a black-box group of samples."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ...access import BLACK_BOX, WHITE_BOX
from ...data import check_images
from ...errors import InputError
from ...gradcam import GradCAM, find_cam_layer, resolve_layer
from ...metrics import psnr
from ...models import device_of
from ...tasks import Classification, Task
from ..base import FingerprintSet, check_input_shape, helper_hashes, target_identity
from ..shared import right_candidates
from ..optimise import ProjectedGradient
from .configurations import MODE_CODE
from .objective import helper_loss, occlusion_value, pattern_mask, sam_loss
from .readout import cam_score, rows_of
from .selection import select
from .thresholds import derive_thresholds
from .settings import SaliencySettings

Models = Sequence[torch.nn.Module]


def generate_group(s: SaliencySettings, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, task: Task, *,
                   pairs: torch.Tensor | None, references: Models, surrogates: Models, calibration: Models,
                   progress: bool) -> FingerprintSet:
    """One group of N samples made with settings ``s`` (``black_box_settings`` already split off; see
    ``SaliencyFingerprint.generate`` for the arguments)."""
    start = time.perf_counter()
    s = s.radius(images)
    model = model.eval()
    device = device_of(model)
    check_images(images, what="candidate images")
    check_input_shape(model, images)
    if len(labels) != len(images):
        raise InputError(f"{len(images)} candidate images but {len(labels)} labels")
    if task.needs_pairs and (pairs is None or len(pairs) != len(images)):
        raise InputError(f"the {task.name} task needs one pair image per candidate")

    layer = s.layer or find_cam_layer(model, images[:1].to(device), min_side=s.min_grid)
    resolve_layer(model, layer)
    generator = torch.Generator().manual_seed(s.seed)
    order = torch.randperm(len(images), generator=generator)
    with torch.no_grad():
        probe = model(images[:1].to(device))
    task.check_labels(labels, probe.shape[1] if probe.ndim == 2 else 1)

    with GradCAM(model, layer) as cam, contextlib.ExitStack() as stack:
        helpers = [
            (role, stack.enter_context(GradCAM(helper.eval(), find_cam_layer(helper, images[:1].to(device), min_side=s.min_grid))))
            for role, group in (("reference", references), ("surrogate", surrogates))
            for helper in group
        ]
        first = task.condition_on(model, labels[:1], rows_of(pairs, slice(0, 1)))
        grid = tuple(cam(images[:1].to(device), cam_score(task, first, logit=s.cam_logit))[0].shape[1:])
        pattern = pattern_mask(s.pattern, grid).to(device)  # type: ignore[arg-type]
        eligible = right_candidates(model, images, labels, order, classify=isinstance(task, Classification))
        # A pool larger than the candidates that keep their prediction shrinks to them; n are always needed.
        needed = s.n if s.selects else s.made
        if len(eligible) < needed:
            raise InputError(f"only {len(eligible)} candidate images keep their prediction on the target, {needed} are needed")
        made = min(s.made, len(eligible))
        tolerance, pool_t_bb = _tolerance(s, model, task, images, labels, pairs, eligible, pattern, device)
        batches = _Batches(s, cam, helpers, task, pattern, generator, tolerance)
        accepted, stats = batches.run(model, images, labels, pairs, eligible, device, progress, made)

    if len(accepted) < needed:
        raise InputError(f"only {len(accepted)} of {made} fingerprints kept the target's prediction; give more candidates or a larger xi")
    stats["pool_size"] = len(accepted)
    accepted.sort(key=lambda item: item[0])  # candidate order: deterministic
    index = torch.tensor([i for i, _, _ in accepted])
    samples = torch.stack([x for _, x, _ in accepted]).cpu()
    tensors = {"samples": samples, "originals": images[index].cpu(), "labels": labels[index].cpu(), "pattern": pattern.cpu()}
    if s.cam_direction == "dominant":
        tensors["direction"] = torch.tensor([d for _, _, d in accepted], dtype=torch.float32)
    if pairs is not None:
        tensors["pairs"] = pairs[index].cpu()
    fingerprints = FingerprintSet(
        scheme=s.name,
        config={**s.settings(), "layer": layer, "tolerance": tolerance, **helper_hashes(references=references, surrogates=surrogates, calibration=calibration)},
        task=task.to_config(),
        tensors=tensors,
        target=target_identity(model),
    )
    if s.selects:
        fingerprints, selection_stats = select(s, fingerprints, task, model, surrogates, references)
        stats.update(selection_stats)
    anchors = surrogates if s.threshold_anchor == "surrogates" else ()
    thresholds, per_sample, threshold_stats = derive_thresholds(s, model, fingerprints, task, calibration, anchors)
    if pool_t_bb is not None and s.bb_threshold == "originals":
        thresholds["black_box"] = pool_t_bb  # the t_bb that the tolerance is half of
    fingerprints.thresholds = thresholds
    fingerprints.tensors.update(per_sample)
    fingerprints.stats = {
        **stats,
        "labels_kept": _kept_share(model, fingerprints, task),
        **threshold_stats,
        "psnr_db_mean": float(psnr(tensors["originals"], samples).mean()),
        "psnr_db_min": float(psnr(tensors["originals"], samples).min()),
        "linf_max": float((samples - tensors["originals"]).abs().max()),
        "reference_models": len(references),
        "surrogate_models": len(surrogates),
        "calibration_models": len(calibration),
        "generation_s": time.perf_counter() - start,
    }
    return fingerprints


def join_groups(white: FingerprintSet, black: FingerprintSet, black_box_settings: object, n: int) -> FingerprintSet:
    """One set of the white-box and the black-box group, whose ``mode`` tensor says which verification reads each
    sample."""
    made = (white, black)
    tensors = {"pattern": white.tensors["pattern"], "mode": torch.tensor([MODE_CODE[WHITE_BOX]] * len(white) + [MODE_CODE[BLACK_BOX]] * len(black), dtype=torch.uint8)}
    for key in ("samples", "originals", "labels", "pairs"):
        if key in white.tensors:
            tensors[key] = torch.cat([white.tensors[key], black.tensors[key]])
    if any("direction" in g.tensors for g in made):  # a group read the output itself: +1
        tensors["direction"] = torch.cat([g.tensors.get("direction", torch.ones(len(g))) for g in made])
    # A mode's per-sample thresholds come from its own group; the other group's rows are never read by that mode.
    for key, owner in (("t_white_box", white), ("t_black_box", black)):
        if key in owner.tensors:
            tensors[key] = torch.cat([g.tensors.get(key, torch.full((len(g),), float("nan"))) for g in made])
    joined = replace(
        white,
        config={**white.config, **{k: black.config[k] for k in ("bb_score", "fill")}, "black_box_settings": black_box_settings},
        tensors=tensors,
        thresholds={"white_box": white.thresholds["white_box"], "black_box": black.thresholds["black_box"]},
    )
    # The figures of all 2N samples follow from the two groups' own (both hold N samples).
    both = [white.stats, black.stats]
    joined.stats = {
        **white.stats,
        **{f"black_box_group_{k}": v for k, v in black.stats.items()},
        **{k: sum(g[k] for g in both) / 2 for k in ("labels_kept", "psnr_db_mean")},
        "psnr_db_min": min(g["psnr_db_min"] for g in both),
        "linf_max": max(g["linf_max"] for g in both),
        "generation_s": sum(g["generation_s"] for g in both),
        "samples_per_mode": n,
    }
    return joined


class _Batches:
    """Optimises candidates batch by batch, re-optimising (lambda doubled) or replacing those whose prediction changed."""

    def __init__(self, s: SaliencySettings, cam: GradCAM, helpers, task: Task, pattern: torch.Tensor, generator: torch.Generator,
                 tolerance: float | None) -> None:
        self.s, self.cam, self.helpers, self.task, self.pattern, self.generator, self.tolerance = s, cam, helpers, task, pattern, generator, tolerance
        alpha = s.step_size if s.step_size is not None else 2.5 * s.xi / max(s.steps, 1)
        self.optimiser = ProjectedGradient(steps=s.steps, lr=alpha, eps=s.xi, norm=s.norm, optimiser="sign" if s.norm == "linf" else "normalised")

    def run(self, model, images, labels, pairs, eligible, device, progress, made) -> tuple[list[tuple[int, torch.Tensor, float]], dict[str, int]]:
        """Optimise candidates in order until ``made`` fingerprints kept the target's output (or none are left).

        Returns:
            (candidate index, fingerprint, direction) per kept fingerprint, and counts of the work done.
        """
        queue = [(i, 0) for i in eligible]  # (candidate index, attempt)
        accepted: list[tuple[int, torch.Tensor, float]] = []
        reoptimised = replaced = tried = 0
        with tqdm(total=made, desc="fingerprints", disable=not progress, leave=False) as bar:
            while queue and len(accepted) < made:
                need = made - len(accepted)
                batch, queue = queue[: min(self.s.batch_size, need)], queue[min(self.s.batch_size, need):]
                idx = torch.tensor([i for i, _ in batch])
                lam = torch.tensor([self.s.lam * 2.0**attempt for _, attempt in batch], device=device)
                cond = self.task.condition_on(model, labels[idx], rows_of(pairs, idx))
                tried += len(batch)
                x = images[idx].to(device)
                direction = self.direction(x, cond)
                best, kept = self.optimise(x, cond, lam, direction)
                for j, (i, attempt) in enumerate(batch):
                    if kept[j]:
                        accepted.append((i, best[j].detach(), 1.0 if direction is None else float(direction[j])))
                    elif attempt < self.s.retries:
                        queue.insert(0, (i, attempt + 1))
                        reoptimised += 1
                    else:
                        replaced += 1
                bar.update(int(kept.sum()))
        return accepted, {"candidates_optimised": tried, "reoptimised": reoptimised, "replaced": replaced}

    def direction(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor | None:
        """Per sample, +1 or -1: which way round the target's Grad-CAM on ``x`` has more mass (``cam_direction=
        "dominant"``); None when F_c is read as it is."""
        if self.s.cam_direction == "value":
            return None
        up, _ = self.cam(x, cam_score(self.task, cond, logit=self.s.cam_logit))
        down, _ = self.cam(x, cam_score(self.task, cond, logit=self.s.cam_logit, direction=-torch.ones(len(x))))
        return torch.where(up.flatten(1).sum(1) >= down.flatten(1).sum(1), 1.0, -1.0).to(x.device)

    def optimise(self, x: torch.Tensor, cond: torch.Tensor, lam: torch.Tensor, direction: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 4 (plus the helper and occlusion terms) for one batch on the projected-gradient optimiser, from a
        random start in the ball around ``x``; returns the prediction-keeping iterate with the lowest L_sam per
        sample and whether any iterate kept it."""
        s, task, cam, pattern = self.s, self.task, self.cam, self.pattern
        with torch.no_grad():
            original = cam.model(x)
        scores = cam_score(task, cond, logit=s.cam_logit, direction=direction)
        best, best_loss = x.clone(), torch.full((len(x),), float("inf"), device=x.device)
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)

        def track(x_adv: torch.Tensor, *, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Read an iterate and keep it where it beats the best kept one so far."""
            nonlocal found
            maps, outputs = cam(x_adv, scores, create_graph=create_graph)
            sam = sam_loss(maps, pattern, s.sam_norm)
            kept = task.kept(outputs.detach(), original, cond, tolerance=self.tolerance)
            better = kept & (sam.detach() < best_loss)
            best[better] = x_adv.detach()[better]
            best_loss[better] = sam.detach()[better]
            found |= kept
            return sam, outputs, kept

        def loss(x_adv: torch.Tensor) -> torch.Tensor:
            sam, outputs, _ = track(x_adv, create_graph=True)
            keep = task.keep_loss(outputs, original, cond, mode=s.keep)
            if self.tolerance and not isinstance(task, Classification):  # a squared change in tolerances: the same for years or distances
                keep = keep / self.tolerance**2
            total = sam + lam * keep + helper_loss(s, self.helpers, task, x_adv, cond, scores, pattern)
            if s.occlusion > 0:
                total = total - s.occlusion * occlusion_value(s, cam.model, task, x_adv, outputs, cond, pattern)
            return total

        last = self.optimiser.run(self.optimiser.random_start(x, self.generator), loss, center=x)
        track(last.requires_grad_(True), create_graph=False)
        return best, found


def _tolerance(s: SaliencySettings, model, task: Task, images, labels, pairs, eligible, pattern, device) -> tuple[float | None, float | None]:
    """The tolerance of kept outputs (see ``tolerance``) and, when derived here, the t_bb it is half of."""
    if s.tolerance is not None or isinstance(task, Classification):
        return s.tolerance, None
    idx = torch.tensor(eligible[:256])
    x = images[idx].to(device)
    with torch.no_grad():
        cond = task.condition_on(model, labels[idx], rows_of(pairs, idx))
        t_bb = float(occlusion_value(s, model, task, x, model(x), cond, pattern).mean())
    if t_bb <= 0:
        raise InputError("masking P does not move the target's output on any candidate: no tolerance can be derived, give one")
    return t_bb / 2, t_bb


def _kept_share(model, fingerprints: FingerprintSet, task: Task) -> float:
    """Share of samples whose target output is kept (an independent re-check of label invariance)."""
    device = device_of(model)
    pairs = fingerprints.tensors.get("pairs")
    with torch.no_grad():
        cond = task.condition_on(model, fingerprints.labels, pairs)
        original = model(fingerprints.tensors["originals"].to(device))
        outputs = model(fingerprints.samples.to(device))
    return float(task.kept(outputs, original, cond, tolerance=fingerprints.config.get("tolerance")).float().mean())
