"""What a live feature-KD step costs against a stored-label KD step, on the same student.

    python benchmarks/bench_feature_kd.py [--student unet-micro-signed] [--teacher unet-small]
        [--size 64] [--batch 8] [--repeats 20] [--device cpu|cuda] [--threads N]

One optimizer step (forward, loss, backward, AdamW) of ``plc distill``'s own step function
(``stages.distill.stage._step``) for: the student alone (L_Seg), vanilla KD on stored labels
(the labels are a batch tensor, as the loader hands them over), and every teacher loss of
``pipeline.kd_table`` with ``--plus-kd`` (one no-grad teacher forward for every tap, the
loss, its connector or head). Random images and weights: the cost does not depend on them.
Timings are medians of ``--repeats`` steps, run round-robin so load drift hits every row
alike; the teacher's forward alone is timed too. The loader is not in these figures (it is
the same for every row: BENCHMARKS.md §10).

GPU (prepared; not run where no device was lent):
    python benchmarks/bench_feature_kd.py --device cuda --size 224 --student unet \
        --teacher transunet --batch 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import fmt_seconds, markdown_table, print_header, set_threads, time_interleaved

from pipeline.kd_table import LIVE, get_loss
from pipeline.models.registry import build_model
from stages.distill.config import DistillConfig
from stages.distill.stage import _step
from stages.distill.teacher_kd import LiveTeacher, build_distiller, resolve_taps


def step_fn(cfg: DistillConfig, args, student, teacher_net, device):
    """A closure taking one full optimizer step of ``cfg``'s loss."""
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    target = (torch.rand(args.batch, args.size, args.size, device=device) > 0.7).long()
    soft = torch.log_softmax(torch.randn(args.batch, 2, args.size, args.size, device=device), 1)
    model, teacher, taps = student, None, ()
    if cfg.live_loss:
        row = get_loss(cfg.loss)
        t_taps = resolve_taps(None, teacher_net, row.taps, "teacher")
        teacher = LiveTeacher(teacher_net, t_taps, Path("-"), "-")
        taps = resolve_taps(None, student, row.taps, "student")
        size = (args.size, args.size)
        model = build_distiller(row, student, taps, teacher, 2, size, device)
    model.train()
    step = _step(cfg, teacher, taps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = (images, target) if cfg.variant == "none" else (images, target, soft)

    def one() -> None:
        optimizer.zero_grad(set_to_none=True)
        step(model, batch)["loss"].backward()
        optimizer.step()

    return one


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", default="unet-micro-signed")
    p.add_argument("--teacher", default="unet-small")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    args = p.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device)
    print_header(f"Live feature-KD step vs stored-label KD step ({args.student} ← {args.teacher})")
    torch.manual_seed(0)
    teacher_net = build_model(args.teacher, num_classes=2, img_size=args.size).to(device).eval()
    teacher_net.requires_grad_(False)
    base = {"labels": ".", "out": Path("-"), "tau": 4.0, "variant": "teacher"}
    configs = {
        "student alone (L_Seg)": DistillConfig(**base | {"variant": "none"}),
        "KD, stored labels": DistillConfig(**base),
        **{f"{name} + KD (live teacher)": DistillConfig(**base, loss=name, plus_kd=True)
           for name in LIVE},
    }  # fmt: skip
    fns = {}
    for label, cfg in configs.items():
        torch.manual_seed(0)
        student = build_model(args.student, num_classes=2, img_size=args.size).to(device)
        fns[label] = step_fn(cfg, args, student, teacher_net, device)
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    t_taps = tuple(teacher_net.kd_taps)

    def teacher_forward() -> None:
        with torch.no_grad():
            teacher_net.forward_taps(images, t_taps)

    fns["(the teacher's forward alone)"] = teacher_forward
    timings = time_interleaved(fns, repeats=args.repeats, warmup=2)
    kd = timings["KD, stored labels"].median
    rows = [[label, fmt_seconds(t.median), f"{t.median / kd:.2f}", f"{100 * t.spread:.0f} %"]
            for label, t in timings.items()]  # fmt: skip
    print(f"batch {args.batch}, {args.size}², device {args.device}, median of {args.repeats} "
          "steps (forward, loss, backward, AdamW)\n")  # fmt: skip
    print(markdown_table(["step", "time per step", "÷ stored KD", "spread"], rows))


if __name__ == "__main__":
    main()
