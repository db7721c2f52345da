"""Where one training step of a model spends its time on this machine: `python benchmarks/profile_step.py`.

    python benchmarks/profile_step.py --model resnet34_unet --size 32 --batch 32   # writes benchmarks/profile_step.json

Times forward and backward (median of 4 after a warm-up) in both memory layouts, with the model's
centre-tap convolutions (petseg.models.nets.parts.CentreTapConv2d) and with plain nn.Conv2d in their
place, all in this one process; then prints torch.profiler's operators by their own CPU time for the
channels_last step as the model is built.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from default_run import machine
from torch.profiler import profile

from petseg.models import build_model
from petseg.models.nets.parts import CentreTapConv2d

RESULTS = Path(__file__).resolve().parent / "profile_step.json"


def step(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    begun = time.perf_counter()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), masks)
    forward = time.perf_counter()
    model.zero_grad(set_to_none=True)
    loss.backward()
    return forward - begun, time.perf_counter() - forward


def plain_convs(model: torch.nn.Module) -> torch.nn.Module:
    """The same model with every CentreTapConv2d back to a plain nn.Conv2d (same weights)."""
    for module in model.modules():
        if type(module) is CentreTapConv2d:
            module.__class__ = torch.nn.Conv2d
    return model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet34_unet")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.manual_seed(0)
    masks = (torch.rand(args.batch, 1, args.size, args.size) > 0.5).float()
    rows = []
    for convs in ("plain", "centre tap"):
        for layout in (torch.contiguous_format, torch.channels_last):
            model = build_model(args.model)
            if convs == "plain":
                plain_convs(model)
            model = model.to(memory_format=layout)
            images = torch.rand(args.batch, 3, args.size, args.size).contiguous(memory_format=layout)
            step(model, images, masks)
            times = [step(model, images, masks) for _ in range(4)]
            row = {
                "convolutions": convs,
                "layout": str(layout).removeprefix("torch."),
                "forward_s": round(statistics.median(t[0] for t in times), 4),
                "backward_s": round(statistics.median(t[1] for t in times), 4),
            }
            rows.append(row)
            print(f"{args.model} {convs}, {row['layout']}: forward {row['forward_s']:.3f} s, "
                  f"backward {row['backward_s']:.3f} s", flush=True)  # fmt: skip
    with profile() as profiled:
        step(model, images, masks)
    print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": args.model,
        "image_size": args.size,
        "batch": args.batch,
        "steps": rows,
        "machine": machine(),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
