"""What surviving faults costs: a resumed training run vs an uninterrupted one, the epoch-end
state per network, and the retrying HTTP reads on a healthy server.

    python benchmarks/bench_resume.py [--rounds 2] [--quick]

1. ``plc train-teacher`` (unet-small, synthetic 64², 6 epochs × 16 steps) run whole, and run
   SIGKILLed in the middle of epoch 3 then rerun with ``--resume``: wall times of each
   process (subprocesses, alternated over ``--rounds``), so the resumed run's cost includes
   its start-up.
2. The epoch-end state (``<out>.train-state``) of each network: its size and the time of one
   atomic save (median of 3), the cost every epoch pays whether or not it is ever resumed.
3. Reading a label store over HTTP from a loopback server that never fails: fsspec's own
   HTTP filesystem vs the retrying one (``storage_schema.remote``), in alternated
   subprocesses.

Prints markdown tables; never asserts on timings.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests" / "stages")]  # the tests' helpers
from _common import ROOT, print_header  # noqa: E402
from kill_at_step import ENV, SCRIPT  # noqa: E402

READ_STORE = """
import sys, time
import storage_schema.remote as remote
if sys.argv[2] == "plain":  # fsspec's own HTTP filesystem: no retries
    remote.register = lambda: None
from storage_schema import open_label_store
start = time.perf_counter()
store = open_label_store(sys.argv[1])
for _ in range(int(sys.argv[3])):
    for variant in store.variants:
        for i in range(len(store)):
            store.read_codes(variant, i)
print(time.perf_counter() - start)
"""


def _plc(args: list[str], env: dict[str, str] | None = None, script: str | None = None) -> float:
    """Wall seconds of one ``plc`` process (``script`` replaces the entry point)."""
    cmd = [sys.executable, "-c", script or "from stages.cli import app; app(prog_name='plc')"]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if script is None and proc.returncode != 0:
        raise SystemExit(f"plc {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def training_resume(root: Path, rounds: int, epochs: int, steps: int) -> list[str]:
    data = root / "data.zarr"
    _plc(["prepare", "--dataset", "synthetic", "--out", str(data), "--size", "64", "--count",
          "160", "--seed", "0", "--no-progress"])  # fmt: skip
    out = root / "teacher.pt"
    args = ["train-teacher", "--dataset", "b", "--data", str(data), "--model", "unet-small",
            "--epochs", str(epochs), "--steps-per-epoch", str(steps), "--batch-size", "8",
            "--val-fraction", "0.1", "--allow-weak-teacher", "--device", "cpu",
            "--no-progress", "--force", "--out", str(out)]  # fmt: skip
    kill_at = (epochs // 2) * steps + steps // 2  # the middle of the middle epoch
    env = os.environ | {ENV: str(kill_at)}
    whole, killed, resumed, same = [], [], [], []
    for _ in range(rounds):
        whole.append(_plc(args))
        reference = out.read_bytes()
        out.unlink()
        killed.append(_plc(args, env, SCRIPT))
        resumed.append(_plc([*args, "--resume"]))
        same.append(out.read_bytes() == reference)
    w, k, r = (statistics.median(x) for x in (whole, killed, resumed))
    lost = (kill_at - (epochs // 2) * steps) / (epochs * steps)
    return [
        f"### 1. Resumed vs uninterrupted: plc train-teacher, unet-small, 64², {epochs} epochs "
        f"× {steps} steps, killed at step {kill_at} (median of {rounds} rounds, alternated)",
        "",
        "| run | wall s | ÷ uninterrupted |",
        "| --- | ---: | ---: |",
        f"| uninterrupted | {w:.1f} | 1.00 |",
        f"| killed run (until SIGKILL) | {k:.1f} | {k / w:.2f} |",
        f"| resumed run (`--resume`) | {r:.1f} | {r / w:.2f} |",
        f"| killed + resumed | {k + r:.1f} | {(k + r) / w:.2f} |",
        "",
        f"The kill threw away {lost:.1%} of the run's steps (half an epoch); the resumed "
        f"checkpoint was byte-identical to the uninterrupted one in {sum(same)} of "
        f"{len(same)} rounds.",
        "",
    ]


def state_sizes(root: Path, networks: list[tuple[str, int]]) -> list[str]:
    import torch

    from pipeline.losses import seg_loss
    from pipeline.models.registry import build_model
    from pipeline.train import TrainConfig, fit
    from stages.train.resume import TrainingState

    class Capture:
        snapshot: dict | None = None

        def load(self) -> None:
            return None

        def save(self, snapshot: dict) -> None:
            self.snapshot = snapshot

    rows = [
        "### 2. The epoch-end state: size and one atomic save (tmp, fsync, rename; median of 3)",
        "",
        "| network | size | parameters | state MB | save s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, size in networks:
        torch.manual_seed(0)
        model = build_model(name, num_classes=2, img_size=size)
        images = torch.rand(2, 3, size, size)
        masks = (images[:, 0] > 0.5).long()
        capture = Capture()
        cfg = TrainConfig(epochs=1, progress=False, device="cpu", ema_decay=0.99)
        batch = [(images, masks)]
        fit(model, lambda e, batch=batch: batch, lambda n, b: {"loss": seg_loss(n(b[0]), b[1])},
            cfg, steps_per_epoch=1, state=capture)  # fmt: skip
        state = TrainingState(root / f"{name}.pt", {"options": {}}, resume=False, command="bench")
        times = []
        for _ in range(3):
            start = time.perf_counter()
            state.save(capture.snapshot)
            times.append(time.perf_counter() - start)
        n_params = sum(p.numel() for p in model.parameters())
        mb = state.path.stat().st_size / 2**20
        rows.append(f"| {name} | {size}² | {n_params / 1e6:.2f} M | {mb:.1f} | "
                    f"{statistics.median(times):.3f} |")  # fmt: skip
        state.finish()
    return [*rows, ""]


def retry_overhead(root: Path, rounds: int, passes: int) -> list[str]:
    sys.path[:0] = [str(ROOT / "tests" / "storage_schema")]
    from http_helpers import serve
    from precompute_inputs import EPOCH, make_inputs, plc, precompute_args

    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    inputs = make_inputs(root / "inputs")
    labels = root / "labels.zarr"
    plc(*precompute_args(inputs, labels))
    times: dict[str, list[float]] = {"plain": [], "retrying": []}
    with serve(root) as url:
        for _ in range(rounds):
            for mode in times:
                proc = subprocess.run(
                    [sys.executable, "-c", READ_STORE, f"{url}/labels.zarr", mode, str(passes)],
                    capture_output=True, text=True, check=True, cwd=ROOT,
                )  # fmt: skip
                times[mode].append(float(proc.stdout.split()[-1]))
    from storage_schema import open_label_store

    store = open_label_store(labels)
    reads = passes * len(store.variants) * len(store)
    plain, retrying = (statistics.median(times[m]) for m in ("plain", "retrying"))
    return [
        f"### 3. HTTP reads from a healthy loopback server: {reads} single-image reads "
        f"({len(store.variants)} variants × {len(store)} images × {passes} passes), median "
        f"of {rounds} alternated processes",
        "",
        "| filesystem | s | ms per read | ÷ plain |",
        "| --- | ---: | ---: | ---: |",
        f"| fsspec HTTP (no retries) | {plain:.2f} | {1e3 * plain / reads:.2f} | 1.00 |",
        f"| retrying (storage_schema.remote) | {retrying:.2f} | {1e3 * retrying / reads:.2f} | "
        f"{retrying / plain:.2f} |",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a minute or two)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    try:
        print_header("Surviving faults: resume and retries (bench_resume.py)")
        lines = training_resume(root, args.rounds, 4 if args.quick else 6, 8 if args.quick else 16)
        networks = [("unet-small", 64), ("unet", 224)]
        if not args.quick:
            networks.append(("transunet", 224))
        lines += state_sizes(root, networks)
        lines += retry_overhead(root, args.rounds, 1 if args.quick else 3)
        print("\n".join(lines))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
