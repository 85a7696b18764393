"""Self-supervised training of ASLFeat on synthetic homography pairs (CPU friendly).

Example::

    python -m aslfeat_training.train --out runs/train --variant u --crop 256 --batch 2 \
        --lr 1e-3 --seed 0 --until 23:35 --resume

Every step draws fresh pairs (:mod:`.data`), runs both views through the backbone in one
batch (batch norm in training mode), updates the instance-max normalisers as moving averages
(decay 0.99, as the official code) and minimises the detector-weighted ranking loss
(:mod:`.losses`) plus the keypoint localization objectives on the fused score map
(:mod:`.localization`: ALIKE-style reprojection and dispersity, R2D2-style repeatability and
peakiness; each weighted by an option, 0 turns a term off). Outputs in ``--out``:

* ``checkpoint.pt`` — resumable state (model, optimiser, step, RNG states, best score), written
  every ``--ckpt-every`` steps, at the end and on SIGTERM/SIGINT;
* ``last.pt`` and ``best.pt`` — weight files (:func:`aslfeat_export.convert.save_weights`), the
  best by the mean validation MMA@3 (held-out synthetic pairs, graf and boat);
* ``log.jsonl`` — one JSON object per line: ``{"kind": "train", ...}`` with the loss terms
  every ``--log-every`` steps and ``{"kind": "val", ...}`` with the validation metrics (MMA@1,
  MMA@3, repeatability, homography accuracy @1/@3 px).

Progress: a tqdm bar with steps/s and ETA, the loss terms and the last validation score, and a
log line per validation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aslfeat_cli.images import check_upscale
from aslfeat_export.convert import save_weights
from aslfeat_export.model import LEVELS, ASLFeat, fuse_scores

from . import localization
from .data import PairSampler, default_data_root, grid_correspondences, train_val_photos
from .distillation import TARGETS, Teacher, distillation_loss
from .localization import localization_loss
from .losses import LOSSES, detector_weighted_loss
from .validate import evaluate, real_pairs, summarise, synthetic_pairs

logger = logging.getLogger("aslfeat_training")

INSTANCE_MAX_DECAY = 0.99
# Localization stats a step reports and the log averages (those of the enabled terms).
LOC_STATS = (
    "reproj", "disp", "rep", "peaky", "target", "shift", "distil", "repeatable", "distance"
)  # fmt: skip


def _factors(text: str) -> tuple[float, ...]:
    """``--val-upscale``: comma-separated factors, each checked like the runtime's --upscale."""
    try:
        return tuple(check_upscale(float(x)) for x in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/train"))
    p.add_argument("--variant", default="u", choices=("u", "a", "h", "plain"))
    p.add_argument("--steps", type=int, default=100000, help="stop after this many steps")
    p.add_argument("--crop", type=int, default=256, help="square crop size (pixels)")
    p.add_argument("--batch", type=int, default=2, help="pairs per step")
    p.add_argument(
        "--enlarge-prob", type=float, default=0.0,
        help="share of pairs made at crop / --enlarge-factor and enlarged to the crop, as the "
        "runtime's --upscale shows images to the network (default 0: off)",
    )  # fmt: skip
    p.add_argument("--enlarge-factor", type=float, default=2.0, help="see --enlarge-prob")
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--loss", default="circle", choices=sorted(LOSSES))
    p.add_argument("--num-corr", type=int, default=512, help="correspondences per pair")
    p.add_argument("--safe-radius", type=float, default=12.0, help="pixels (3 descriptor cells)")
    g = p.add_argument_group(
        "keypoint localization (on the fused score map; a weight of 0 turns a term off)"
    )
    g.add_argument(
        "--reproj-weight",
        type=float,
        default=0.1,
        help="ALIKE reprojection distance of mutual nearest keypoints, pixels (default 0.1)",
    )
    g.add_argument(
        "--disp-weight",
        type=float,
        default=0.05,
        help="ALIKE dispersity (peaky) term of the soft-argmax windows (default 0.05)",
    )
    g.add_argument(
        "--rep-weight",
        type=float,
        default=0.0,
        help="R2D2 repeatability: 1 - local cosine of the score maps (default 0: off)",
    )
    g.add_argument(
        "--peaky-weight",
        type=float,
        default=0.0,
        help="R2D2 peakiness: 1 - (local max - local mean) (default 0: off)",
    )
    g.add_argument(
        "--target-weight",
        type=float,
        default=0.0,
        help="peak target: cross-entropy of each score window around the other view's warped "
        "keypoints with their bilinear splat, moves the integer peaks (default 0: off)",
    )
    g.add_argument(
        "--shift-weight",
        type=float,
        default=0.0,
        help="shift equivariance: R2D2 repeatability between view A's fused map and the map "
        "of A moved 1-3 px along the diagonal; one more forward of A per pair (default 0: off)",
    )
    g.add_argument(
        "--shift-levels",
        default=None,
        help="detector levels the shift term trains (default: those of --loc-levels); "
        "conv6 is the coarsest lattice",
    )
    g.add_argument(
        "--distil-weight",
        type=float,
        default=0.0,
        help="self-distillation: ask view A's single-pass fused map for what a frozen teacher "
        "detects on with --upscale/--shifts at inference (--distil-target; "
        "training/distillation.py; default 0: off)",
    )
    g.add_argument(
        "--distil-teacher",
        type=Path,
        default=None,
        help="the teacher's weights (default: --init's; fixed for the whole run, resumes too)",
    )
    g.add_argument(
        "--distil-target",
        default="map",
        choices=TARGETS,
        help="map: the teacher's map (local cosine); peaks: its keypoints as peak targets "
        "(cross-entropy of the student's windows, as --target-weight; default map)",
    )
    g.add_argument(
        "--distil-upscale", type=int, default=2, help="the teacher's --upscale (default 2)"
    )
    g.add_argument(
        "--distil-shifts", type=int, default=4, help="the teacher's --shifts (default 4)"
    )
    g.add_argument(
        "--distil-levels",
        default=None,
        help="detector levels the distillation term trains (default: those of --shift-levels, "
        "else --loc-levels)",
    )
    g.add_argument(
        "--loc-levels",
        default="conv1,conv3",
        help="detector levels the localization terms train (the others enter the fused map "
        "detached; conv6 is also the descriptor, default conv1,conv3)",
    )
    g.add_argument(
        "--window-radius",
        type=int,
        default=localization.WINDOW_RADIUS,
        help="soft-argmax window radius r, window (2r+1)^2, also the NMS radius (default 2)",
    )
    g.add_argument(
        "--temperature",
        type=float,
        default=localization.TEMPERATURE,
        help="soft-argmax temperature on scores / window max (default 0.1)",
    )
    g.add_argument(
        "--num-peaks",
        type=int,
        default=localization.NUM_PEAKS,
        help="NMS peaks per view and pair (default 256)",
    )
    g.add_argument(
        "--distance-cap",
        type=float,
        default=localization.DISTANCE_CAP,
        help="pixels: nearest keypoints farther apart are not pulled together (default 5)",
    )
    g.add_argument(
        "--keypoint-position",
        default=localization.POSITION,
        choices=localization.POSITIONS,
        help="where the reprojection term takes keypoints: the soft-argmax of the window or "
        "inference's clipped Newton step (default softargmax)",
    )
    g.add_argument(
        "--patch-size", type=int, default=localization.PATCH_SIZE,
        help="R2D2 window for repeatability and peakiness (default 8)",
    )  # fmt: skip
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the backbone")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init", type=Path, default=None, help="start from these weights")
    p.add_argument("--until", default=None, help="stop at this local time HH:MM")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this long")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-at-start", action="store_true", help="validate before training")
    p.add_argument("--val-synthetic", type=int, default=8, help="held-out synthetic pairs")
    p.add_argument("--val-size", type=int, default=320, help="synthetic validation crop")
    p.add_argument("--val-max-dim", type=int, default=0, help="downscale graf/boat (0: full)")
    p.add_argument("--val-keypoints", type=int, default=2000)
    p.add_argument(
        "--val-upscale", type=_factors, default=(1.0,),
        help="comma-separated --upscale factors to validate at (default 1); metrics of a "
        "factor F other than 1 are logged with the prefix uF_, the score is their mean",
    )  # fmt: skip
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--data", type=Path, default=None, help="training photos (../shared/data/train)")
    p.add_argument("--pairs", type=Path, default=None, help="real pairs (../shared/data/pairs)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def deadline(args: argparse.Namespace, start: float) -> float:
    """Wall-clock time (time.time()) at which to stop; inf when unlimited."""
    end = math.inf
    if args.max_minutes is not None:
        end = min(end, start + 60 * args.max_minutes)
    if args.until:
        hour, minute = (int(x) for x in args.until.split(":"))
        now = dt.datetime.now()
        target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if target <= now:
            target += dt.timedelta(days=1)
        end = min(end, target.timestamp())
    return end


def update_instance_max(model: ASLFeat, levels: dict[str, torch.Tensor]) -> None:
    """Moving average of each detector level's maximum (official: decay 0.99, then used)."""
    with torch.no_grad():
        for i, name in enumerate(LEVELS):
            current = levels[name].detach().float().max()
            model.instance_max[i] = (
                INSTANCE_MAX_DECAY * model.instance_max[i] + (1 - INSTANCE_MAX_DECAY) * current
            )


def train_step(
    model: ASLFeat,
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    homographies: np.ndarray,
    args: argparse.Namespace,
    generator: torch.Generator | None = None,
    teacher: Teacher | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward both views, update the normalisers and return the mean loss over the pairs.

    ``teacher`` (with ``args.distil_weight`` > 0) gives view A's distillation targets.
    """
    n, _, height, width = images_a.shape
    shift_weight = args.shift_weight
    views = [images_a, images_b]
    if shift_weight > 0:
        # 1-3 px: every offset from the 4-pixel lattice of conv6 other than none.
        shift = int(torch.randint(1, 4, (1,), generator=generator))
        views.append(localization.shift_image(images_a, shift))
    images = torch.cat(views)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
        dense = model.backbone(images)
        update_instance_max(model, dense.levels)
        levels = [lv.float() for lv in model.level_scores(dense)]
    scores = fuse_scores(levels, (height, width))[:, 0]

    def fused_into(names: str | None) -> torch.Tensor:
        """The same fused map, with gradients only into the levels ``names`` lists."""
        chosen = set(names.split(",")) if names else set()
        if chosen >= set(LEVELS):
            return scores
        kept = [
            lv if name in chosen else lv.detach() for name, lv in zip(LEVELS, levels, strict=True)
        ]
        return fuse_scores(kept, (height, width))[:, 0]

    loc_scores = fused_into(args.loc_levels)
    shift_levels = args.shift_levels or args.loc_levels
    shift_scores = loc_scores if shift_levels == args.loc_levels else fused_into(shift_levels)
    distil_weight = args.distil_weight
    if distil_weight > 0:
        if teacher is None:
            raise ValueError("--distil-weight needs a teacher")
        distil_levels = args.distil_levels or shift_levels
        distil_scores = fused_into(distil_levels)
        if args.distil_target == "peaks":
            teacher_points = teacher.keypoints(
                images_a, args.num_peaks, args.window_radius, bf16=bool(args.bf16)
            )
        else:
            teacher_maps = teacher.score_maps(images_a, bf16=bool(args.bf16))
    desc = dense.descriptor_map.float()
    losses, accs, n_corr = [], [], []
    terms: dict[str, list[float]] = {"desc": []}
    for k in range(n):
        pos_a, pos_b = grid_correspondences(homographies[k], (width, height))
        loss, stats = detector_weighted_loss(
            desc[k],
            desc[n + k],
            scores[k],
            scores[n + k],
            torch.from_numpy(pos_a),
            torch.from_numpy(pos_b),
            loss_type=args.loss,
            num_corr=args.num_corr,
            safe_radius=args.safe_radius,
            generator=generator,
        )
        terms["desc"].append(float(loss.detach()))
        loc, loc_stats = localization_loss(
            loc_scores[k],
            loc_scores[n + k],
            torch.from_numpy(homographies[k]),
            reprojection_weight=args.reproj_weight,
            dispersity_weight=args.disp_weight,
            repeatability_weight=args.rep_weight,
            peakiness_weight=args.peaky_weight,
            target_weight=args.target_weight,
            radius=args.window_radius,
            temperature=args.temperature,
            num_peaks=args.num_peaks,
            cap=args.distance_cap,
            patch=args.patch_size,
            position=args.keypoint_position,
        )
        if shift_weight > 0:
            equi, _ = localization.shift_consistency_loss(
                shift_scores[k], shift_scores[2 * n + k], shift, args.patch_size
            )
            loc = loc + shift_weight * equi
            loc_stats["shift"] = float(equi.detach())
        if distil_weight > 0:
            if args.distil_target == "peaks":
                distil, _ = localization.peak_target_loss(
                    distil_scores[k], teacher_points[k], args.window_radius, args.temperature
                )
            else:
                distil, _ = distillation_loss(distil_scores[k], teacher_maps[k], args.patch_size)
            loc = loc + distil_weight * distil
            loc_stats["distil"] = float(distil.detach())
        for key in LOC_STATS:
            if key in loc_stats and math.isfinite(loc_stats[key]):
                terms.setdefault(key, []).append(loc_stats[key])
        losses.append(loss + loc)
        accs.append(stats["accuracy"])
        n_corr.append(stats["n_corr"])
    valid = [a for a in accs if not math.isnan(a)]
    return torch.stack(losses).mean(), {
        "accuracy": float(np.mean(valid)) if valid else float("nan"),
        "n_corr": float(np.mean(n_corr)),
        "score_mean": float(scores.detach().mean()),
        **{key: float(np.mean(values)) for key, values in terms.items() if values},
    }


def validation_summary(
    model: ASLFeat, val_set: list, num_keypoints: int, factors: tuple[float, ...]
) -> dict:
    """:func:`summarise` at each ``--upscale`` factor: factor 1's keys as they are, another
    factor F's with the prefix ``uF_``; ``score`` is the mean of the factors' scores (each
    also logged as ``uF_score`` when there are several)."""
    summary: dict = {}
    scores = []
    for factor in factors:
        part = summarise(evaluate(model, val_set, num_keypoints, upscale=factor))
        scores.append(part["score"])
        prefix = "" if factor == 1 else f"u{factor:g}_"
        summary.update({prefix + k: v for k, v in part.items()})
        if len(factors) > 1:
            summary[f"u{factor:g}_score"] = part["score"]
    summary["score"] = float(np.mean(scores))
    return summary


def make_teacher(model: ASLFeat, args: argparse.Namespace) -> Teacher | None:
    """The distillation teacher: ``--distil-teacher``'s weights, else the starting ones
    (``--init``, loaded into ``model`` before a resume replaces them); None when off."""
    if args.distil_weight <= 0:
        return None
    if args.distil_teacher is not None:
        from aslfeat_export.convert import load_weights

        source = load_weights(args.distil_teacher)
    elif args.init is not None:
        source = model
    else:
        raise SystemExit("--distil-weight needs --distil-teacher or --init (the teacher's weights)")
    return Teacher(source, args.distil_upscale, args.distil_shifts)


def make_optimizer(model: ASLFeat, args: argparse.Namespace) -> torch.optim.Optimizer:
    if args.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic write (temporary file, then rename) so a kill never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


class Stop:
    """Set by SIGTERM/SIGINT; the loop finishes its step, saves and exits."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.requested = True


def run(args: argparse.Namespace) -> dict:
    """Train; returns a summary dict (steps done, last loss, best score)."""
    start_time = time.time()
    end_time = deadline(args, start_time)
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    log_path = out / "log.jsonl"

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = ASLFeat(args.variant)
    if args.init is not None:
        from aslfeat_export.convert import load_weights

        model.load_state_dict(load_weights(args.init).state_dict())
    teacher = make_teacher(model, args)
    optimizer = make_optimizer(model, args)
    step, best = 0, -1.0
    if args.resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # --lr given on resume wins: a manual step decay
            group["lr"] = args.lr
        step, best = state["step"], state["best"]
        rng.bit_generator.state = state["numpy_rng"]
        generator.set_state(state["torch_rng"])
        torch.set_rng_state(state["torch_global_rng"])
        logger.info("resumed from %s at step %d (best %.4f)", ckpt_path, step, best)
    model.train()

    train_photos, val_photos = train_val_photos(args.data)
    sampler = PairSampler(
        train_photos,
        crop=args.crop,
        batch_size=args.batch,
        enlarge_prob=args.enlarge_prob,
        enlarge_factor=args.enlarge_factor,
    )
    pairs_root = args.pairs or default_data_root().parent / "pairs"
    val_set = synthetic_pairs(val_photos, args.val_synthetic, size=args.val_size)
    val_set += real_pairs(pairs_root, args.val_max_dim)

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "best": best,
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": generator.get_state(),
                "torch_global_rng": torch.get_rng_state(),
                "args": {k: str(v) for k, v in vars(args).items()},
            },
        )
        save_weights(model, out / "last.pt", step=str(step), loss=args.loss)

    def log(record: dict) -> None:
        record["time"] = dt.datetime.now().isoformat(timespec="seconds")
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    last_val: dict = {}
    # Stop early enough for the final validation and checkpoint to finish by the deadline.
    margin = [60.0]

    def validate() -> dict:
        nonlocal best
        t0 = time.time()
        summary = validation_summary(model, val_set, args.val_keypoints, args.val_upscale)
        summary["val_seconds"] = round(time.time() - t0, 1)
        margin[0] = max(margin[0], 1.5 * summary["val_seconds"] + 30)
        log({"kind": "val", "step": step, **summary})
        if summary["score"] > best:
            best = summary["score"]
            save_weights(model, out / "best.pt", step=str(step), score=f"{best:.4f}")
        logger.info("step %d validation: %s", step, json.dumps(summary))
        last_val.clear()
        last_val.update(summary)
        return summary

    stop = Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.val_at_start and step == 0:
        validate()
    bar = tqdm(
        total=args.steps, initial=step, disable=args.no_progress, mininterval=10, smoothing=0.05
    )
    window: list[tuple[float, dict]] = []
    last_loss = float("nan")
    t_window = time.time()

    def time_left() -> bool:
        return time.time() + margin[0] < end_time

    while step < args.steps and not stop.requested and time_left():
        images_a, images_b, homographies = sampler.batch(rng)
        loss, stats = train_step(model, images_a, images_b, homographies, args, generator, teacher)
        optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            optimizer.step()
        step += 1
        last_loss = float(loss.detach())
        window.append((last_loss, stats))
        bar.update(1)
        if step % args.log_every == 0:
            losses = [w[0] for w in window if math.isfinite(w[0])]
            record = {"kind": "train", "step": step}
            record["loss"] = float(np.mean(losses)) if losses else None
            for key in ("accuracy", "desc", *LOC_STATS):
                values = [w[1][key] for w in window if math.isfinite(w[1].get(key, math.nan))]
                if values:
                    record[key] = float(np.mean(values))
            record.update(
                score_mean=stats["score_mean"],
                instance_max=[round(float(x), 4) for x in model.instance_max],
                sec_per_step=round((time.time() - t_window) / len(window), 3),
            )
            log(record)
            postfix = {k: f"{record[k]:.3f}" for k in ("desc", "reproj", "disp") if k in record}
            if last_val:
                postfix["val"] = f"{last_val['score']:.3f}"
            bar.set_postfix(postfix)
            window, t_window = [], time.time()
        if step % args.ckpt_every == 0:
            checkpoint()
        if step % args.val_every == 0:
            validate()
    bar.close()
    reason = "signal" if stop.requested else ("time" if not time_left() else "steps")
    if step % args.val_every != 0 and reason != "signal":
        validate()
    checkpoint()
    if not (out / "best.pt").exists():
        save_weights(model, out / "best.pt", step=str(step))
    log({"kind": "end", "step": step, "reason": reason, "best": best})
    logger.info("stopped at step %d (%s); best validation score %.4f", step, reason, best)
    return {"step": step, "loss": last_loss, "best": best, "reason": reason}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(parse_args(argv))


if __name__ == "__main__":
    main()
