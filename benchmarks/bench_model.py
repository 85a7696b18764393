"""Model speed: backends and precisions (onnxruntime, OpenVINO float32/bfloat16) vs OpenCV SIFT.

Median milliseconds per image (network + keypoint selection, 5000 keypoints) and peak resident
memory, at 640x480 and 1024x768 on a real photo, all measured in one run, with the ratio to
OpenCV SIFT (5000 features) on the same image. Times come from one process that holds every
configuration and interleaves their runs (medians; on a shared machine only such side-by-side
ratios mean something); peak memory from one process per configuration. For every ASLFeat
configuration it also
reports keypoint agreement with onnxruntime float32 (share within 0.5 px / 1 px, median
descriptor cosine) and MMA@1/@3 on ../shared/data/pairs; for OpenVINO the start-up (read +
graph pass + compile) with an empty and with a filled model cache, and a static-shape compile.
``--all`` adds the PyTorch eager and onnxruntime GridSample rows (needs the export extra).

    python benchmarks/bench_model.py [--runs 5] [--threads 2] [--all]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT.parent / "shared" / "data" / "pairs"
PHOTO = PAIRS / "boat_1_2" / "A.png"
SIZES = [(480, 640), (768, 1024)]
MODEL = ROOT / "weights" / "aslfeat.onnx"
# label, worker backend, precision (for the ASLFeat backends); the reference comes first.
CONFIGS = [
    ("onnxruntime fp32", "onnxruntime", "fp32"),
    ("OpenVINO fp32", "openvino", "fp32"),
    ("OpenVINO bf16", "openvino", "bf16"),
    ("OpenVINO bf16, static shape", "openvino-static", "bf16"),
    ("OpenCV SIFT 5000", "sift", None),
]
EXTRA_CONFIGS = [
    ("PyTorch eager (grid_sample DCN)", "torch", None),
    ("onnxruntime, GridSample + Conv", "ort-gridsample", None),
]


def load_photo(size: tuple[int, int]) -> np.ndarray:
    if PHOTO.exists():
        image = cv2.imread(str(PHOTO), cv2.IMREAD_GRAYSCALE)
    else:
        from skimage import data

        image = data.camera()
    return cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)


def _open(args: argparse.Namespace, model: Path) -> tuple[object, dict]:
    """The Extractor of one configuration, and its start-up times (OpenVINO: cold/warm cache)."""
    from aslfeat_cli.extractor import Extractor

    if not args.backend.startswith("openvino"):
        backend = "onnxruntime" if args.backend.startswith("ort") else args.backend
        return Extractor(model, device="cpu", threads=args.threads, backend=backend), {}
    from aslfeat_cli.backends.openvino import open_openvino

    static = tuple(args.size) if args.backend == "openvino-static" else None
    times = {}
    with tempfile.TemporaryDirectory() as cache:
        for key in ("open_cold_s", "open_warm_s"):
            start = time.perf_counter()
            backend = open_openvino(
                model, args.precision, args.threads, cache_dir=cache, static_shape=static
            )
            times[key] = time.perf_counter() - start
    extractor = Extractor(model, device="cpu", threads=1, backend="onnxruntime")
    extractor.session = backend  # the same Extractor code path after the network
    return extractor, times


def _mma(extractor: object) -> dict:
    """MMA@1/@3 of ``extractor`` on ../shared/data/pairs (mutual nearest neighbours)."""
    from aslfeat_cli import homography_eval as he
    from aslfeat_cli.hpatches import load_homography_pairs

    if not PAIRS.is_dir():
        return {}
    results = he.evaluate(
        load_homography_pairs(PAIRS), [he.extractor_method("m", extractor)], progress=False
    )
    overall = he.group_summaries(results)["m"]["overall"]
    mma = dict(zip(he.MMA_THRESHOLDS, overall.mma, strict=True))
    return {"mma1": mma[1], "mma3": mma[3]}


def _runner(args: argparse.Namespace, image: np.ndarray):  # noqa: ANN202 (tuple of callables)
    """(run() -> number of keypoints, the Extractor or None, start-up times) of one config."""
    if args.backend == "sift":
        sift = cv2.SIFT_create(nfeatures=5000)
        return lambda: len(sift.detectAndCompute(image, None)[0]), None, {}
    if args.backend == "torch":
        import torch

        from aslfeat_cli.keypoints import DetectionConfig, select_keypoints
        from aslfeat_export.convert import load_weights

        torch.set_num_threads(args.threads)
        model = load_weights(args.weights)
        x = torch.from_numpy(image).float()[None, None]

        def run() -> int:
            with torch.no_grad():
                s, d = model(x)
            return len(select_keypoints(s.numpy(), d.numpy(), DetectionConfig())[0])

        return run, None, {}
    gridsample = args.backend == "ort-gridsample" and args.onnx
    ex, extra = _open(args, Path(args.onnx) if gridsample else MODEL)
    return lambda: len(ex.extract(image)), ex, extra


def worker(args: argparse.Namespace) -> None:
    """One configuration in its own process: peak memory, keypoints (to --save), start-up
    times, selection time and (--quality) MMA; print a JSON line."""
    image = load_photo(tuple(args.size))
    run, ex, extra = _runner(args, image)
    run()  # warm-up
    n = run()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the MMA runs
    select_ms = None
    if ex is not None:
        from aslfeat_cli.keypoints import select_keypoints

        s, d = ex.session.run(image.astype(np.float32))
        t = time.perf_counter()
        for _ in range(args.runs):
            select_keypoints(s, d, ex.config)
        select_ms = 1000 * (time.perf_counter() - t) / args.runs
        if args.save:
            features = ex.extract(image)
            np.savez(args.save, keypoints=features.keypoints, descriptors=features.descriptors)
        if args.quality:
            extra.update(_mma(ex))
    print(json.dumps({"peak_mb": peak_mb, "keypoints": n, "select_ms": select_ms, **extra}))


def timing(args: argparse.Namespace, configs: list) -> None:
    """All configurations in one process, their runs interleaved (load on a shared machine
    changes by the second, so only side-by-side ratios mean something); print medians."""
    image = load_photo(tuple(args.size))
    runners = {}
    for label, backend, precision in configs:
        config = argparse.Namespace(**{**vars(args), "backend": backend, "precision": precision})
        runners[label] = _runner(config, image)[0]
        runners[label]()  # warm-up
    times: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(args.runs):
        for label, run in runners.items():
            t = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - t)
    print(json.dumps({label: 1000 * statistics.median(t) for label, t in times.items()}))


def agreement(reference: Path, other: Path) -> dict:
    """Share of the reference keypoints with one of ``other``'s within 0.5 / 1 px, and the
    median descriptor cosine of those nearest pairs."""
    from aslfeat_cli.keypoints import nearest_keypoints

    a, b = np.load(reference), np.load(other)
    index, distance = nearest_keypoints(a["keypoints"], b["keypoints"])
    cosine = (a["descriptors"] * b["descriptors"][index]).sum(axis=1)
    return {
        "within_05": float((distance <= 0.5).mean()),
        "within_1": float((distance <= 1.0).mean()),
        "cosine": float(np.median(cosine)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "weights" / "aslfeat.pt")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--all", action="store_true", help="also PyTorch eager and GridSample")
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--quality", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configs = list(CONFIGS) + (EXTRA_CONFIGS if args.all else [])
    if args.timing:
        timing(args, configs)
        return
    if args.backend:
        worker(args)
        return

    tmp = Path(tempfile.mkdtemp())
    gridsample = None
    if args.all:
        from aslfeat_export.export_onnx import export_weights

        gridsample = export_weights(args.weights, tmp / "gridsample.onnx", "gridsample")
    results = {}
    for size in SIZES:
        for label, backend, precision in configs:
            save = tmp / f"{backend}-{precision}-{size[0]}.npz"
            cmd = [sys.executable, __file__, "--backend", backend, "--size", *map(str, size)]
            cmd += ["--runs", str(args.runs), "--threads", str(args.threads)]
            cmd += ["--weights", str(args.weights), "--save", str(save)]
            if precision:
                cmd += ["--precision", precision]
            if backend == "ort-gridsample":
                cmd += ["--onnx", str(gridsample)]
            if size == SIZES[0] and precision and backend != "openvino-static":
                cmd.append("--quality")  # MMA once per configuration
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            reference = tmp / f"onnxruntime-fp32-{size[0]}.npz"
            if precision and save.exists():
                result.update(agreement(reference, save))
            results[label, size] = result
        cmd = [sys.executable, __file__, "--timing", "--size", *map(str, size)]
        cmd += ["--runs", str(args.runs), "--threads", str(args.threads)]
        cmd += ["--weights", str(args.weights)] + (["--all"] if args.all else [])
        if gridsample:
            cmd += ["--onnx", str(gridsample)]  # only the GridSample row reads --onnx
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        for label, ms in json.loads(out.stdout.strip().splitlines()[-1]).items():
            results[label, size]["ms"] = ms

    sift = {size: results["OpenCV SIFT 5000", size]["ms"] for size in SIZES}
    head = "| configuration | " + " | ".join(f"{w}x{h} ms | × SIFT | peak MB" for h, w in SIZES)
    head += " | within 0.5 px / 1 px | desc. cosine | MMA@1 | MMA@3 |"
    print(head)
    print("|---" * (1 + 3 * len(SIZES) + 4) + "|")
    for label, _, _ in configs:
        cells = []
        for size in SIZES:
            r = results[label, size]
            cells += [f"{r['ms']:.0f}", f"{r['ms'] / sift[size]:.2f}", f"{r['peak_mb']:.0f}"]
        first = results[label, SIZES[0]]
        if "within_05" in first:
            cells += [
                f"{first['within_05']:.2%} / {first['within_1']:.2%}",
                f"{first['cosine']:.5f}",
            ]
        else:
            cells += ["", ""]
        cells += [f"{first[k]:.3f}" if k in first else "" for k in ("mma1", "mma3")]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    for label, _, _ in configs:
        r = results[label, SIZES[0]]
        if "open_cold_s" in r:
            print(
                f"{label}: start-up {r['open_cold_s']:.2f} s with an empty model cache, "
                f"{r['open_warm_s']:.2f} s with it filled"
            )
    sel = ", ".join(
        f"{w}x{h}: {results[configs[0][0], (h, w)]['select_ms']:.1f} ms" for h, w in SIZES
    )
    print(f"keypoint selection in numpy (included above): {sel}")
    print(
        f"{args.threads} threads, median of {args.runs} runs after one warm-up; agreement with "
        f"onnxruntime fp32 at {SIZES[0][1]}x{SIZES[0][0]}; MMA on {PAIRS.name}/ at full size"
    )
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()}")
    print(f"CPU: {cpu_name()}")


def cpu_name() -> str:
    """The CPU's model name and its bfloat16/AMX flags (hosts vary: state what ran)."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
    return f"{model}; flags: {' '.join(f for f in wanted if f in flags)}; {os.cpu_count()} CPUs"


if __name__ == "__main__":
    main()
