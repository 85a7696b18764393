"""The real hloc (../shared/vendor/hloc, unmodified, not on PyPI) on our files and extractor.

(a) hloc's io helpers read our features and matches; (b) its NN-mutual ``match_features``
gives exactly ``aslfeat match``'s matches; (c) its ``reconstruction.main`` on our features and
matches registers every sacre_coeur photo, and that model triangulates again from a database
written by ``aslfeat colmap`` (pycolmap's reference-model triangulation); (d) its own
``extract_features.main`` with our registered extractor writes what ``aslfeat extract`` writes.

Needs ../shared (hloc's package and the photos): skipped where absent, required under CI=true.
hloc's extract/match steps also need torch (the export extra) and Pillow.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from aslfeat_cli import h5io
from aslfeat_cli.cli import cli
from aslfeat_cli.images import fit_size

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HLOC_ROOT = SHARED / "vendor" / "hloc"
IMAGES = SHARED / "data" / "sfm" / "sacre_coeur" / "images"
NUM_KEYPOINTS = 4000
MAX_DIM = 1024


def require_shared(path: Path) -> Path:
    """``path`` under ../shared; skip when absent, but fail under CI=true (required there)."""
    if not path.exists():
        message = f"{path} not found: ../shared (hloc, real photos) is absent"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; it is required in CI")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def hloc():
    """The vendored hloc package, imported from its folder (never installed)."""
    require_shared(HLOC_ROOT / "hloc")
    pytest.importorskip("torch", reason="hloc needs torch (pip install -e '.[export]')")
    pytest.importorskip("PIL", reason="hloc needs Pillow")
    if str(HLOC_ROOT) not in sys.path:
        sys.path.insert(0, str(HLOC_ROOT))
    import hloc

    return hloc


@pytest.fixture(scope="module")
def sacre_coeur(tmp_path_factory) -> dict[str, Path]:
    """`aslfeat extract` + `aslfeat match --exhaustive` on the 10 sacre_coeur photos."""
    images = require_shared(IMAGES)
    out = tmp_path_factory.mktemp("sacre_coeur")
    features, matches = out / "features.h5", out / "matches.h5"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["-q", "extract", str(images), "-o", str(features)]
        + ["--num-keypoints", str(NUM_KEYPOINTS), "--max-dim", str(MAX_DIM)],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["-q", "match", str(features), "-o", str(matches), "--exhaustive"])
    assert result.exit_code == 0, result.output
    pairs = out / "pairs.txt"
    pairs.write_text("".join(f"{a} {b}\n" for a, b in h5io.list_pairs(matches)))
    return {"images": images, "features": features, "matches": matches, "pairs": pairs}


def test_hloc_io_reads_our_files(hloc, sacre_coeur):
    """(a) hloc.utils.io: names, keypoints and matches as we wrote them (both directions)."""
    from hloc.utils import io as hloc_io
    from hloc.utils.parsers import names_to_pair

    assert h5io.names_to_pair("a/b.jpg", "c.jpg") == names_to_pair("a/b.jpg", "c.jpg")
    features, matches = sacre_coeur["features"], sacre_coeur["matches"]
    names = sorted(h5io.list_names(features))
    assert sorted(hloc_io.list_h5_names(features)) == names
    ours = h5io.read_features(features, names[3])
    keypoints, uncertainty = hloc_io.get_keypoints(features, names[3], return_uncertainty=True)
    np.testing.assert_array_equal(keypoints, ours["keypoints"])
    # hloc's rule: detection noise (1 px) times the mean resize factor (--max-dim 1024)
    small = np.array(fit_size(*(int(v) for v in ours["image_size"]), MAX_DIM))
    assert uncertainty == pytest.approx(np.mean(ours["image_size"] / small), rel=1e-6)
    sizes = [h5io.read_features(features, n)["image_size"] for n in names]
    assert any(max(size) > MAX_DIM for size in sizes)  # some were downscaled: factor > 1
    resized = next(n for n, size in zip(names, sizes, strict=True) if max(size) > MAX_DIM)
    _, noise = hloc_io.get_keypoints(features, resized, return_uncertainty=True)
    assert noise > 1.0
    for name0, name1 in h5io.list_pairs(matches)[:5]:
        expected, scores = h5io.read_match_pairs(matches, name0, name1)
        got, got_scores = hloc_io.get_matches(matches, name0, name1)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(got_scores, scores)
        flipped, _ = hloc_io.get_matches(matches, name1, name0)
        np.testing.assert_array_equal(flipped, expected[:, ::-1])


def test_hloc_nn_mutual_equals_aslfeat_match(hloc, sacre_coeur, tmp_path):
    """(b) hloc's match_features with NN-mutual gives our matches, pair by pair."""
    from hloc import match_features
    from hloc.utils import io as hloc_io

    from aslfeat_cli.integrations.hloc import MATCHER_CONF

    assert MATCHER_CONF == match_features.confs["NN-mutual"]
    pairs = h5io.list_pairs(sacre_coeur["matches"])
    assert len(pairs) == 45
    pairs = pairs[::4]  # 12 of the 45 pairs: hloc's loader is slow on 2 cores
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    theirs = tmp_path / "hloc_matches.h5"
    match_features.main(MATCHER_CONF, pairs_file, features=sacre_coeur["features"], matches=theirs)
    for name0, name1 in pairs:
        ours, _ = h5io.read_match_pairs(sacre_coeur["matches"], name0, name1)
        got, _ = hloc_io.get_matches(theirs, name0, name1)
        np.testing.assert_array_equal(got, ours, err_msg=f"{name0} {name1}")


@pytest.fixture(scope="module")
def hloc_model(hloc, sacre_coeur, tmp_path_factory):
    """hloc's reconstruction.main on our features and matches (its sfm folder)."""
    import pycolmap
    from hloc import reconstruction

    # pycolmap's geometric verification (inside hloc, multi-threaded, not ours to configure)
    # makes the model vary from run to run on the same files: on 2026-12-02, on a 2-core Xeon,
    # 10/10 images with 346, 797 and > 1000 points, and once 9/10 with 336. So up to three
    # attempts (the mapper itself on one thread with a fixed seed); the first that registers
    # every image with > 1000 points is kept, else the last (and the tests below fail).
    for attempt in range(3):
        sfm = tmp_path_factory.mktemp("hloc_sfm")
        pycolmap.set_random_seed(attempt)
        model = reconstruction.main(
            sfm,
            sacre_coeur["images"],
            sacre_coeur["pairs"],
            sacre_coeur["features"],
            sacre_coeur["matches"],
            mapper_options={"num_threads": 1},
        )
        if model is not None and model.num_reg_images() == 10 and model.num_points3D() > 1000:
            break
        print(f"hloc attempt {attempt + 1}: {model.summary() if model else 'no model'}")
    return sfm, model


@pytest.mark.slow
def test_hloc_reconstruction_registers_all(hloc_model):
    """(c) hloc's reconstruction.main on our features and matches: 10/10 registered."""
    _, model = hloc_model
    assert model is not None
    assert model.num_reg_images() == 10, model.summary()
    assert model.num_points3D() > 1000


@pytest.mark.slow
def test_reference_model_triangulation_on_our_database(hloc_model, sacre_coeur, tmp_path):
    """A known-poses model triangulated with our database (`aslfeat colmap`) on pycolmap 4.

    hloc's triangulation.main writes its two-view geometries with config UNDEFINED, and
    pycolmap 4.2 then triangulates nothing; ours come from pycolmap's verification.
    """
    import pycolmap

    from aslfeat_cli import colmap_db

    sfm, model = hloc_model
    database = tmp_path / "database.db"
    result = CliRunner().invoke(
        cli,
        ["-q", "colmap", str(sacre_coeur["features"]), str(sacre_coeur["matches"])]
        + ["-d", str(database), "--image-dir", str(sacre_coeur["images"])],
    )
    assert result.exit_code == 0, result.output
    ids = colmap_db.image_ids(database)
    # triangulate_points pairs model and database images by id: ours are given in name order
    assert {image.name: image_id for image_id, image in model.images.items()} == ids
    db = pycolmap.Database.open(database)
    try:
        names = sorted(ids)
        geometry = db.read_two_view_geometry(ids[names[0]], ids[names[1]])
    finally:
        db.close()
    assert geometry.config != pycolmap.TwoViewGeometryConfiguration.UNDEFINED
    reference = pycolmap.Reconstruction(sfm)
    triangulated = pycolmap.triangulate_points(
        reference, database, sacre_coeur["images"], tmp_path / "triangulated"
    )
    assert triangulated.num_reg_images() == 10
    # measured: 2230 points triangulated where the mapper made 2237
    assert triangulated.num_points3D() > 0.8 * model.num_points3D()


@pytest.mark.parametrize(
    ("preset", "model_options", "options", "noise"),
    [
        ("aslfeat", {}, [], 1.0),
        (
            "aslfeat_precise",
            {"pool_scales": [1.0, 0.5]},
            ["--upscale", "2", "--pool-scales", "1,0.5"],
            0.5,
        ),
    ],
)
def test_hloc_extract_features_with_our_extractor(
    hloc, tmp_path, preset, model_options, options, noise
):
    """(d) hloc's extract_features.main + register() == `aslfeat extract` (float32 path).

    resize_max above the photos' size: hloc then hands over the image unresized, so the
    network sees the same pixels (hloc resizes float32 images, we resize uint8 ones) and the
    descriptors and scores come out bit-identical.
    """
    from hloc import extract_features
    from hloc.utils import io as hloc_io

    from aslfeat_cli.integrations.hloc import DETECTION_NOISE, register

    images = require_shared(IMAGES)
    names = sorted(p.name for p in images.glob("*.jpg"))[:1]
    confs = register()
    assert register() == confs  # idempotent
    assert {"aslfeat", "aslfeat_max", "aslfeat_precise"} <= set(extract_features.confs)
    conf = confs[preset]
    conf["model"]["max_keypoints"] = 2000
    conf["model"].update(model_options)
    conf["preprocessing"]["resize_max"] = 1600  # larger than every photo: no resizing
    theirs = extract_features.main(
        conf, images, image_list=names, feature_path=tmp_path / "hloc.h5", as_half=False
    )
    ours = tmp_path / "ours.h5"
    result = CliRunner().invoke(
        cli,
        ["-q", "extract", *(str(images / n) for n in names), "-o", str(ours)]
        + ["--num-keypoints", "2000", *options],
    )
    assert result.exit_code == 0, result.output
    for name in names:
        expected = h5io.read_features(ours, name)
        with h5py.File(theirs, "r") as fh:
            grp = fh[name]
            # hloc maps keypoints back by (x + 0.5) * scale - 0.5 even at scale 1: float32
            # rounding moves a few by one unit in the last place (3e-5 px at 512).
            np.testing.assert_allclose(
                grp["keypoints"][()], expected["keypoints"], rtol=0, atol=1e-4
            )
            np.testing.assert_array_equal(grp["descriptors"][()].T, expected["descriptors"])
            np.testing.assert_array_equal(grp["scores"][()], expected["scores"])
            np.testing.assert_array_equal(grp["image_size"][()], expected["image_size"])
        # The detection noise is in network pixels: halved in image pixels by --upscale 2.
        _, uncertainty = hloc_io.get_keypoints(theirs, name, return_uncertainty=True)
        assert uncertainty == pytest.approx(noise * DETECTION_NOISE)
        _, our_uncertainty = hloc_io.get_keypoints(ours, name, return_uncertainty=True)
        assert our_uncertainty == pytest.approx(noise * DETECTION_NOISE)


def test_register_refuses_unknown_model_options(hloc):
    """A misspelt model option is an error, not silently ignored."""
    from hloc import extractors
    from hloc.utils.base_model import dynamic_load

    from aslfeat_cli.integrations.hloc import register

    register()
    model_class = dynamic_load(extractors, "aslfeat")
    assert model_class.__name__ == "ASLFeat"
    with pytest.raises(ValueError, match="max_keypoint"):
        model_class({"name": "aslfeat", "max_keypoint": 10})
