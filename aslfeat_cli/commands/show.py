"""`aslfeat show`: PNG pictures of keypoints and matches stored in hloc HDF5 files."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import click
import numpy as np

from ..errors import UserError
from ._options import verbosity_options

logger = logging.getLogger(__name__)


def picture_name(*names: str) -> str:
    """A flat PNG file name for one image or a pair: 'sub/a.jpg', 'b.png' -> 'sub-a__b.png'.

    Image extensions are dropped (no 'a.jpg.png'); '/' in names becomes '-'.
    """
    stems = (str(PurePosixPath(n).with_suffix("")) if PurePosixPath(n).suffix else n for n in names)
    return "__".join(n.replace("/", "-") for n in stems) + ".png"


def read_color_image(images: Path, name: str) -> np.ndarray:
    """The image ``name`` under ``images`` as BGR, pixels as stored (EXIF not applied)."""
    import cv2

    path = images / name
    try:
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the image ({exc.strerror or exc})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise UserError(f"{path}: not a readable image")
    return image


def inlier_mask(matches_file: Path, name0: str, name1: str, pairs: np.ndarray) -> np.ndarray | None:
    """Which of ``pairs`` (M, 2) geometric verification kept; None when it did not run."""
    import h5py

    from ..h5io import names_to_pair, read_match_pairs

    with h5py.File(matches_file, "r") as fh:
        keys = (names_to_pair(name0, name1), names_to_pair(name1, name0))
        verified = any(k in fh and "inliers0" in fh[k] for k in keys)
    if not verified:
        return None
    kept, _ = read_match_pairs(matches_file, name0, name1, inliers_only=True)
    width = int(max(pairs[:, 1].max(initial=0), kept[:, 1].max(initial=0))) + 1
    return np.isin(pairs[:, 0] * width + pairs[:, 1], kept[:, 0] * width + kept[:, 1])


@click.command(
    "show",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  aslfeat show features.h5 --images images/ -o pictures/
  aslfeat show features.h5 --matches matches.h5 --images images/ -o pictures/
  aslfeat show features.h5 --images images/ -o pictures/ --names a.jpg --names b.jpg
""",
)
@click.argument("features", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--images",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder that the image names in FEATURES are relative to.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the pictures (keypoints/ and matches/ inside).",
)
@click.option(
    "--matches",
    "matches_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Matches file (hloc HDF5): also draw the matches of its pairs.",
)
@click.option(
    "--names",
    multiple=True,
    help="Only these images (repeatable); pairs are drawn when both images are named.",
)
@click.option(
    "--max-pairs",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Draw at most this many pairs (in file order).",
)
@click.option(
    "--max-lines",
    type=click.IntRange(min=1),
    default=400,
    show_default=True,
    help="At most this many match lines per picture.",
)
@verbosity_options
@click.pass_context
def command(
    ctx: click.Context,
    features: Path,
    images: Path,
    output: Path,
    matches_file: Path | None,
    names: tuple[str, ...],
    max_pairs: int,
    max_lines: int,
) -> None:
    """Draw keypoints (circle size by score) and matches (inliers green, outliers red when
    geometric verification ran) to PNG pictures."""
    from tqdm import tqdm

    from ..h5io import list_names, list_pairs, read_features, read_match_pairs
    from ..outputs import prepare_output_dir
    from ..viz import draw_keypoints, draw_matches, save_png

    quiet = bool((ctx.obj or {}).get("quiet"))
    prepare_output_dir(output)
    stored = list_names(features)
    if not stored:
        raise UserError(f"{features}: holds no features")
    chosen = list(names) or stored
    missing = sorted(set(chosen) - set(stored))
    if missing:
        raise UserError(f"{features}: no features for {', '.join(missing[:5])}")

    if matches_file is not None:  # before any picture is drawn
        import h5py

        from ..settings import check_same_features

        with h5py.File(matches_file, "r") as mfh, h5py.File(features, "r") as ffh:
            check_same_features(mfh.attrs, ffh.attrs, matches_file, features)

    cache: dict[str, tuple[np.ndarray, dict]] = {}

    def load(name: str) -> tuple[np.ndarray, dict]:
        if name not in cache:
            cache[name] = (read_color_image(images, name), read_features(features, name))
        return cache[name]

    written = 0
    for name in tqdm(chosen, desc="keypoints", disable=quiet):
        image, feats = load(name)
        picture = draw_keypoints(image, feats["keypoints"], feats["scores"], title=name)
        save_png(output / "keypoints" / picture_name(name), picture)
        cache.pop(name)  # pictures of pairs reload; keeps memory flat for big folders
        written += 1

    if matches_file is not None:
        wanted = set(chosen)
        pairs = [p for p in list_pairs(matches_file) if p[0] in wanted and p[1] in wanted]
        if len(pairs) > max_pairs:
            logger.warning("drawing the first %d of %d pairs (--max-pairs)", max_pairs, len(pairs))
            pairs = pairs[:max_pairs]
        for name0, name1 in tqdm(pairs, desc="matches", disable=quiet):
            (image0, feats0), (image1, feats1) = load(name0), load(name1)
            index_pairs, _ = read_match_pairs(matches_file, name0, name1)
            if len(index_pairs) and (
                index_pairs[:, 0].max() >= len(feats0["keypoints"])
                or index_pairs[:, 1].max() >= len(feats1["keypoints"])
            ):
                raise UserError(
                    f"{matches_file}: matches of ({name0}, {name1}) do not fit the keypoints "
                    f"in {features} (were they made from another features file?)"
                )
            inliers = inlier_mask(matches_file, name0, name1, index_pairs)
            picture = draw_matches(
                image0,
                image1,
                feats0["keypoints"],
                feats1["keypoints"],
                index_pairs,
                inliers,
                title=f"{name0}  <->  {name1}",
                max_lines=max_lines,
            )
            save_png(output / "matches" / picture_name(name0, name1), picture)
            written += 1
            if len(cache) > 8:
                cache.clear()
    logger.info("wrote %d picture(s) to %s", written, output)
