"""Training code: a real optimisation step, resuming, and the loss's degenerate cases.

Small (64x64 crops, a few steps) so the file runs in seconds on a shared CPU. Photos are
skimage's sample images written to a temporary folder, so no shared data is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
skdata = pytest.importorskip("skimage.data")

from aslfeat_export.convert import load_weights  # noqa: E402
from aslfeat_export.model import ASLFeat  # noqa: E402
from aslfeat_training.data import PairSampler, grid_correspondences  # noqa: E402
from aslfeat_training.losses import detector_weighted_loss  # noqa: E402
from aslfeat_training.train import make_teacher, parse_args, run, train_step  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "aslfeat.pt"


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(root / "camera.png"), skdata.camera())
    cv2.imwrite(str(root / "astronaut.png"), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    return root


def _args(out: Path, photos: Path, *extra: str):
    return parse_args(
        [
            "--out", str(out), "--data", str(photos), "--pairs", str(out / "no_pairs"),
            "--crop", "64", "--batch", "1", "--num-corr", "128", "--val-synthetic", "0",
            "--log-every", "1", "--no-progress", "--threads", "1", *extra,
        ]
    )  # fmt: skip


def test_step_changes_parameters_and_overfits_one_batch(photo_root: Path, tmp_path: Path):
    torch.manual_seed(0)
    args = _args(tmp_path, photo_root)
    model = ASLFeat("u").train()
    sampler = PairSampler(sorted(photo_root.glob("*.png")), crop=64, batch_size=1)
    images_a, images_b, homographies = sampler.batch(np.random.default_rng(3))
    before = {k: v.clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss, stats = train_step(model, images_a, images_b, homographies, args)
        assert torch.isfinite(loss) and stats["n_corr"] >= 32
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert "backbone.conv0.conv.weight" in changed and "backbone.conv6.conv.weight" in changed
    assert losses[-1] < losses[0]
    # The instance-max normalisers moved away from their initial 1 as moving averages.
    assert not torch.allclose(model.instance_max, torch.ones(3))


def test_resume_continues_step_count(photo_root: Path, tmp_path: Path):
    first = run(_args(tmp_path, photo_root, "--steps", "2", "--ckpt-every", "1"))
    assert first["step"] == 2 and np.isfinite(first["loss"])
    # A resumed run may change the loss options (here: Newton positions, the peak target).
    options = ("--keypoint-position", "newton", "--target-weight", "0.1")
    second = run(_args(tmp_path, photo_root, "--steps", "3", "--resume", *options))
    assert second["step"] == 3
    state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 3
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    train = [r for r in records if r["kind"] == "train"]
    assert "target" in train[-1] and "target" not in train[0]
    for name in ("last.pt", "best.pt"):
        assert isinstance(load_weights(tmp_path / name), ASLFeat)


def test_loss_without_correspondences_is_zero_and_backward_safe():
    desc_a = torch.randn(128, 8, 8, requires_grad=True)
    desc_b = torch.randn(128, 8, 8, requires_grad=True)
    score_a = torch.rand(32, 32, requires_grad=True)
    score_b = torch.rand(32, 32, requires_grad=True)
    empty = torch.zeros(0, 2)
    loss, stats = detector_weighted_loss(desc_a, desc_b, score_a, score_b, empty, empty)
    loss.backward()
    assert float(loss) == 0.0 and stats["n_corr"] == 0
    assert float(desc_a.grad.abs().sum()) == 0.0 and float(score_a.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("loss_type", ["circle", "hardest_contrastive"])
def test_loss_prefers_matching_descriptors(loss_type: str):
    """Identical descriptors at corresponding cells score lower than unrelated ones."""
    torch.manual_seed(0)
    h = np.array([[1.0, 0, 4], [0, 1, 4], [0, 0, 1]])  # shift by exactly one descriptor cell
    pos_a, pos_b = (torch.from_numpy(p) for p in grid_correspondences(h, (64, 64)))
    desc_a = torch.randn(128, 16, 16)
    desc_b = torch.roll(desc_a, shifts=(1, 1), dims=(1, 2))  # b at cell+1 == a at cell
    scores = torch.ones(64, 64)
    good, stats = detector_weighted_loss(
        desc_a, desc_b, scores, scores, pos_a, pos_b, loss_type=loss_type
    )
    bad, _ = detector_weighted_loss(
        desc_a, torch.randn(128, 16, 16), scores, scores, pos_a, pos_b, loss_type=loss_type
    )
    assert float(good) < float(bad)
    assert stats["accuracy"] == 1.0


def test_shift_weight_adds_the_equivariance_term(photo_root: Path, tmp_path: Path):
    torch.manual_seed(0)
    model = ASLFeat("u").train()
    sampler = PairSampler(sorted(photo_root.glob("*.png")), crop=64, batch_size=1)
    images_a, images_b, homographies = sampler.batch(np.random.default_rng(3))
    off = _args(tmp_path, photo_root)
    on = _args(tmp_path, photo_root, "--shift-weight", "1.0")
    _, stats_off = train_step(model, images_a, images_b, homographies, off)
    loss, stats_on = train_step(model, images_a, images_b, homographies, on)
    assert "shift" not in stats_off
    assert 0 < stats_on["shift"] <= 2  # 1 - cosine
    loss.backward()
    assert model.backbone.conv1.conv.weight.grad is not None


def test_shift_levels_choose_where_the_shift_term_trains(photo_root: Path, tmp_path: Path):
    """Same step, same random draws: only --shift-levels differs, and with it the gradient
    reaching conv6's detector (the coarsest lattice) but not the descriptor loss's share."""
    sampler = PairSampler(sorted(photo_root.glob("*.png")), crop=64, batch_size=1)
    images_a, images_b, homographies = sampler.batch(np.random.default_rng(3))
    torch.manual_seed(0)
    model = ASLFeat("u").train()
    grads = {}
    instance_max = model.instance_max.clone()  # each step moves it: start both alike
    for levels in ("conv1", "conv6", "conv1"):
        extra = ("--reproj-weight", "0", "--disp-weight", "0", "--shift-weight", "1.0")
        args = _args(tmp_path, photo_root, *extra, "--shift-levels", levels)
        model.zero_grad()
        model.instance_max.copy_(instance_max)
        torch.manual_seed(1)
        loss, stats = train_step(model, images_a, images_b, homographies, args)
        loss.backward()
        if levels in grads:  # the repeated conv1 step: the comparison is deterministic
            torch.testing.assert_close(model.backbone.conv6.conv.weight.grad, grads[levels])
        grads[levels] = model.backbone.conv6.conv.weight.grad.clone()
        assert stats["shift"] > 0
    assert not torch.allclose(grads["conv1"], grads["conv6"], rtol=1e-3, atol=1e-6)


def test_distillation_trains_towards_the_teacher_of_the_starting_weights(
    photo_root: Path, tmp_path: Path
):
    """--distil-weight logs its term, the teacher is --init's weights (also on resume, not the
    checkpoint's), and a run without weights for the teacher is refused."""
    distil = ("--init", str(WEIGHTS), "--distil-weight", "1.0", "--distil-upscale", "1")
    options = (*distil, "--distil-shifts", "2", "--ckpt-every", "1")
    first = run(_args(tmp_path, photo_root, "--steps", "2", *options))
    assert first["step"] == 2 and np.isfinite(first["loss"])
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(0 < r["distil"] <= 2 for r in records if r["kind"] == "train")

    args = _args(tmp_path, photo_root, "--steps", "3", "--resume", *options)
    student = load_weights(tmp_path / "last.pt")  # trained two steps: not the teacher
    teacher = make_teacher(load_weights(WEIGHTS), args)
    shipped = load_weights(WEIGHTS).state_dict()
    for name, value in teacher.model.state_dict().items():
        torch.testing.assert_close(value, shipped[name], rtol=0, atol=0)
    assert not torch.equal(
        student.state_dict()["backbone.conv0.conv.weight"], shipped["backbone.conv0.conv.weight"]
    )
    assert run(args)["step"] == 3
    # The teacher's keypoints as peak targets: a cross-entropy, logged under the same name.
    peaks = ("--distil-target", "peaks", "--steps", "4", "--resume", "--num-peaks", "32")
    assert run(_args(tmp_path, photo_root, *options, *peaks))["step"] == 4
    last = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r for r in last if r["kind"] == "train"][-1]["distil"] > 0

    args = _args(tmp_path, photo_root, "--distil-teacher", str(WEIGHTS), "--distil-weight", "1")
    assert make_teacher(ASLFeat("u"), args).upscale == 2  # the file's weights, default options
    with pytest.raises(SystemExit, match="--distil-teacher or --init"):
        make_teacher(ASLFeat("u"), _args(tmp_path, photo_root, "--distil-weight", "1"))
    assert make_teacher(ASLFeat("u"), _args(tmp_path, photo_root)) is None


def _blob(size: tuple[int, int], centre: tuple[float, float], sigma: float) -> np.ndarray:
    ys, xs = np.mgrid[: size[1], : size[0]].astype(np.float64)
    r2 = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2
    return (200 * np.exp(-r2 / (2 * sigma**2))).astype(np.float32)


def _centroid(image: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    w = np.maximum(image.astype(np.float64) - 1.0, 0)
    return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


def test_enlarged_pair_homography_maps_content_between_the_enlarged_views():
    """A blob at a known sub-pixel place in A, B = A through a known homography; after
    enlarging both views 2x, the returned homography takes A's blob onto B's."""
    from aslfeat_cli.synthetic import warp_points
    from aslfeat_training.data import enlarge_pair

    h = np.array([[0.9, -0.12, 9.3], [0.1, 1.1, -4.6], [2e-4, -1e-4, 1.0]])
    image_a = _blob((48, 48), (21.3, 23.7), 2.5)
    image_b = cv2.warpPerspective(image_a, h, (48, 48), flags=cv2.INTER_CUBIC)
    big_a, big_b, big_h = enlarge_pair(image_a, image_b, h, size=(96, 96))
    assert big_a.shape == big_b.shape == (96, 96)
    np.testing.assert_allclose(_centroid(big_a), 2 * np.array([21.3, 23.7]) + 0.5, atol=0.02)
    mapped = warp_points(_centroid(big_a)[None], big_h)[0]
    np.testing.assert_allclose(mapped, _centroid(big_b), atol=0.1)
    # The same homography composed by hand: pixel centres scale about the image corner.
    s = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])
    np.testing.assert_allclose(big_h, s @ h @ np.linalg.inv(s) / (s @ h @ np.linalg.inv(s))[2, 2])


def test_enlarge_prob_makes_enlarged_pairs_and_zero_replays_the_old_pairs(photo_root: Path):
    photos = sorted(photo_root.glob("*.png"))
    plain = PairSampler(photos, crop=64, batch_size=2).batch(np.random.default_rng(5))
    off = PairSampler(photos, crop=64, batch_size=2, enlarge_prob=0.0).batch(
        np.random.default_rng(5)
    )
    for x, y in zip(plain, off, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    images_a, images_b, homographies = PairSampler(
        photos, crop=64, batch_size=2, enlarge_prob=1.0
    ).batch(np.random.default_rng(5))
    assert tuple(images_a.shape) == tuple(images_b.shape) == (2, 1, 64, 64)

    # Bilinear 2x enlarging leaves neighbouring pixels closer than in a native crop.
    def roughness(t):
        return float(torch.abs(t[..., :, 1:] - t[..., :, :-1]).mean())

    assert roughness(images_a) < 0.8 * roughness(plain[0])
    with pytest.raises(ValueError, match="enlarge_prob"):
        PairSampler(photos, enlarge_prob=1.5)


def test_validation_at_an_upscale_factor_logs_its_metrics(
    photo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from aslfeat_training import train as train_module

    # Two photos are too few for the held-out split: validate on the training photos.
    photos = sorted(photo_root.glob("*.png"))
    monkeypatch.setattr(train_module, "train_val_photos", lambda _root: (photos, photos))
    args = _args(
        tmp_path, photo_root, "--steps", "1", "--val-synthetic", "2", "--val-size", "96",
        "--val-every", "1", "--val-upscale", "1,2", "--enlarge-prob", "0.5",
    )  # fmt: skip
    run(args)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    val = [r for r in records if r["kind"] == "val"][-1]
    assert {"syn_mma1", "u2_syn_mma1", "u2_syn_h3", "u1_score", "u2_score"} <= set(val)
    assert val["score"] == pytest.approx((val["u1_score"] + val["u2_score"]) / 2)
    # At 2x the network sees 192-px views: more keypoints than at 96 px.
    assert val["u2_syn_matches"] >= val["syn_matches"]
    with pytest.raises(SystemExit):
        parse_args(["--val-upscale", "0.5"])
