"""Where one training step of a model spends its time on this machine: `python benchmarks/profile_step.py`.

    python benchmarks/profile_step.py --model resnet34_unet --size 32 --batch 32

Times forward and backward (median of 3 after a warm-up) in both memory layouts, then prints
torch.profiler's operators by their own CPU time for the channels_last step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import profile

from petseg.models import build_model


def step(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    begun = time.perf_counter()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), masks)
    forward = time.perf_counter()
    model.zero_grad(set_to_none=True)
    loss.backward()
    return forward - begun, time.perf_counter() - forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet34_unet")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    masks = (torch.rand(args.batch, 1, args.size, args.size) > 0.5).float()
    for layout in (torch.contiguous_format, torch.channels_last):
        model = build_model(args.model).to(memory_format=layout)
        images = torch.rand(args.batch, 3, args.size, args.size).contiguous(memory_format=layout)
        step(model, images, masks)
        times = [step(model, images, masks) for _ in range(3)]
        forward = statistics.median(t[0] for t in times)
        backward = statistics.median(t[1] for t in times)
        print(f"{args.model} {layout}: forward {forward:.3f} s, backward {backward:.3f} s", flush=True)
    with profile() as profiled:
        step(model, images, masks)
    print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
