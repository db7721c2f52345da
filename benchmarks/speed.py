"""petseg's speed on this machine, in one run: `python benchmarks/speed.py`.

Prints one `name: value` line per figure (ratios end in `_ratio`) and writes
the same figures to benchmarks/results.json. Every ratio compares two ways of
doing the same work, measured in the same run and interleaved, so that the
ratio holds on any machine (and on a busy one) even when absolute speeds do not:

- preprocess_ratio: preprocess images/s over a plain one-process PIL loop on
  the same files (target >= 1.8 on 2 cores);
- <model>_train_efficiency_ratio: our training loop (cache batches, device
  augmentation, metrics) over the model's own forward + backward + optimizer
  step on ready tensors of the same batch (target >= 0.90);
- training loops (benchmarks/bench_loops.py, one fresh process per measurement,
  UNet base 16 at 128 x 128, batch 16, 256 images; each ratio changes one thing
  unless said):
  - loader_speedup_ratio: our data path (uint8 cache, augmentation on the
    device) over the reference reports' (per-sample PIL Dataset in a
    DataLoader with 2 workers), with the same model, memory format,
    precision and optimizer on both sides;
  - seed_loop_speedup_ratio: our epoch with every default (the precision
    ``auto`` picks: bf16 on a CPU with native bf16) over the reports' loop as
    they wrote it (their data path, NCHW, fp32, torch.optim.AdamW's defaults,
    no heap tuning): what switching gains;
  - seed_loop_same_precision_ratio: the same, with the reports' loop at the
    precision ``auto`` picks too (the loop alone; equal to the above where
    ``auto`` is fp32);
  - heap_tuning_ratio: our epoch with the glibc heap tuning over without it;
  - bf16_speedup_ratio: bf16 autocast over fp32 (auto trains in fp32 on every
    CPU until bf16's quality check passes: see RESULTS.md; on a CPU without
    native bf16 the pair runs on a quarter of the images, ``bf16_images``);
  - compile_speedup_ratio: torch.compile over eager, steady state;
- eval_images_per_s, infer_images_per_s: evaluation of the test cache and
  inference on image files (masks and panels written);
- preprocess_peak_rss_mb_n / _2n: peak memory of preprocessing n and 2n images.

Uses the synthetic source only; about 16 minutes on a 2-core CPU without native bf16.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_preprocess
import torch
from bench_train import measure_train_efficiency
from default_run import machine

from petseg.checkpoint import Checkpoint, save_checkpoint
from petseg.data import layout
from petseg.data.cache import load_split
from petseg.data.preprocess import preprocess
from petseg.device import resolve_device
from petseg.evaluation import evaluate_checkpoint
from petseg.inference import infer_images
from petseg.models import build_model
from petseg.params import EvaluateParams
from petseg.precision import cpu_native_bf16

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results.json"
WORK_DIR = BENCHMARKS / "work"
LOOP_VARIANTS = (
    "ours",
    "reference-data",
    "reference",
    "reference-best",
    "ours-untuned-heap",
    "ours-fp32",
    "ours-bf16",
    "ours-compiled",
    "ours-uncompiled",
)


# ------------------------------------------------------------------------ preprocess


def measure_preprocess(n_images: int, repeats: int) -> dict[str, float]:
    """bench_preprocess.measure in a fresh interpreter without torch, as the preprocess stage runs.

    Preprocessing forks its decoding workers; forking this process, which holds
    torch, costs them measurably (about 5-10% of the ratio here), and the stage
    never pays that.
    """
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_preprocess.py"), "--json", str(n_images), str(repeats)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------- training loops


def measure_loops(
    raw: Path, *, size: int = 128, n_images: int = 256, repeats: int = 2, variants: tuple[str, ...] = LOOP_VARIANTS
) -> dict[str, float]:
    """Images/s of each loop variant of bench_loops.py, each in a fresh process, interleaved ``repeats`` times."""
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as tmp:
        preprocess(raw, tmp, image_size=size, split="official", val_every=10**6, progress=False)
        rates: dict[str, list[float]] = {variant: [] for variant in variants}
        warmups: dict[str, list[float]] = {variant: [] for variant in variants}
        for _ in range(repeats):
            for variant in variants:
                done = subprocess.run(
                    [
                        sys.executable,
                        str(BENCHMARKS / "bench_loops.py"),
                        variant,
                        "--raw",
                        str(raw),
                        "--cache",
                        tmp,
                        "--epochs",
                        "1",
                        "--images",
                        str(n_images),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                rates[variant].append(measured["median"])
                warmups[variant].append(measured["warmup_seconds"])
    median = {variant: statistics.median(values) for variant, values in rates.items()}
    figures = {f"loop_{variant.replace('-', '_')}_images_per_s": value for variant, value in median.items()}
    if "ours-compiled" in warmups and "ours-uncompiled" in warmups:  # compilation, paid once per run
        figures["compile_seconds"] = statistics.median(warmups["ours-compiled"]) - statistics.median(
            warmups["ours-uncompiled"]
        )
    ratios = {
        "loader_speedup_ratio": ("ours", "reference-data"),
        "seed_loop_speedup_ratio": ("ours", "reference"),
        "seed_loop_same_precision_ratio": ("ours", "reference-best"),
        "heap_tuning_ratio": ("ours", "ours-untuned-heap"),
        "bf16_speedup_ratio": ("ours-bf16", "ours-fp32"),
        "compile_speedup_ratio": ("ours-compiled", "ours-uncompiled"),
    }
    for name, (numerator, denominator) in ratios.items():
        if numerator in median and denominator in median:
            figures[name] = median[numerator] / median[denominator]
    return figures


# ------------------------------------------------------------------ eval and infer


def measure_eval_and_infer(
    raw: Path, *, size: int = 128, base_channels: int = 16, n_images: int = 64, device_name: str = "auto"
) -> dict[str, float]:
    """Images/s of evaluation (test cache) and of inference on image files, for one UNet checkpoint."""
    device = resolve_device(device_name)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as tmp:
        tmp = Path(tmp)
        preprocess(raw, tmp / "cache", image_size=size, progress=False)
        split = load_split(tmp / "cache", "test")
        torch.manual_seed(0)
        model = build_model("unet", base_channels=base_channels)
        checkpoint = tmp / "best.pt"
        save_checkpoint(
            checkpoint,
            Checkpoint(
                model_name="unet",
                model_params={"base_channels": base_channels},
                model=model.state_dict(),
                image_size=size,
                epoch=1,
                val_dice=0.0,
            ),
        )
        config = EvaluateParams(threshold=0.5, tta=False, n_worst=0, batch_size=32)
        evaluate_checkpoint(checkpoint, split, config, device)  # warm-up
        start = time.perf_counter()
        evaluation = evaluate_checkpoint(checkpoint, split, config, device)
        eval_rate = len(evaluation.dice) / (time.perf_counter() - start)

        inputs = [layout.image_path(raw, name) for name in split.names[:n_images]]
        start = time.perf_counter()
        result = infer_images(
            checkpoint,
            inputs,
            tmp / "predictions",
            device=device_name,
            progress=False,
            trimaps_dir=raw / layout.TRIMAPS_DIR,
        )
        infer_rate = len(result.written) / (time.perf_counter() - start)
    return {"eval_images_per_s": eval_rate, "infer_images_per_s": infer_rate}


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds (a smoke run, not a measurement)")
    parser.add_argument("--output", default=str(RESULTS), help="where to write the JSON results")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    results: dict[str, Any] = {}

    def report(figures: dict[str, float]) -> None:
        for key, value in figures.items():
            results[key] = round(float(value), 3)
            print(f"{key}: {results[key]:g}", flush=True)

    started = time.perf_counter()
    report(measure_preprocess(n_images=64 if quick else 800, repeats=1 if quick else 3))
    raw = bench_preprocess.build_raw(WORK_DIR, 128 if quick else 1600)
    for name, params in (("unet", {"base_channels": 16}), ("resnet34_unet", {"encoder_weights": None})):
        figures = measure_train_efficiency(
            name,
            params,
            image_size=64,
            batch_size=16,
            n_images=64 if quick else 256,
            rounds=2 if quick else 6,
            device_name=args.device,
        )
        report({f"{name}_{key}": value for key, value in figures.items()})
    loop_images = 64 if quick else 256
    if resolve_device(args.device).type == "cpu" and not cpu_native_bf16()[0]:
        # bf16 runs about an order of magnitude slower than fp32 on a CPU without native bf16 (auto does not
        # pick it): its pair is measured on a quarter of the images, in the same run, so the benchmark stays short.
        report(
            measure_loops(
                raw,
                n_images=loop_images,
                repeats=1 if quick else 2,
                variants=tuple(v for v in LOOP_VARIANTS if v not in ("ours-bf16", "reference-best")),
            )
        )
        # auto trains in fp32 here, so the reports' loop at its best precision is the one as written
        report({"seed_loop_same_precision_ratio": results["seed_loop_speedup_ratio"]})
        bf16 = measure_loops(raw, n_images=loop_images // 4, repeats=1, variants=("ours-fp32", "ours-bf16"))
        report({"bf16_speedup_ratio": bf16["bf16_speedup_ratio"], "bf16_images": loop_images // 4})
    else:
        report(measure_loops(raw, n_images=loop_images, repeats=1 if quick else 2))
    report(measure_eval_and_infer(raw, n_images=16 if quick else 64, device_name=args.device))
    report({"benchmark_seconds": time.perf_counter() - started})

    device = resolve_device(args.device)
    results["_machine"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        **machine(),
        "quick": quick,
    }
    output = Path(args.output)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {output}")


if __name__ == "__main__":
    main()
