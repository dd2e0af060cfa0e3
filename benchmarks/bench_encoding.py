"""Soft-label encodings side by side on realistic soft maps: size, error, throughput.

Soft maps are built from smooth random logits: a blurred random field thresholded into
lesion blobs gives the class layout; the logit margin rises as ``A · tanh(d / w)`` with the
signed distance ``d`` to the boundary (a blurred band of width ``w`` px), ``A`` varying
smoothly in [6, 16] nats, plus small blurred noise. So most pixels are confident
(p_min ~ 1e-3 … 1e-7) and a band around each boundary is soft, as a trained teacher's are.

Encodings (C classes per pixel):

- ``int8 log-p ×8``: the store's encoding (``storage_schema.encode_logprobs``/``decode``);
- ``float16 p``: probabilities as float16;
- ``uint8 p·255``: probabilities rounded to 1/255;
- ``float32 log-p``: the lossless baseline.

Decoding follows the students' path: probabilities are renormalised and floored at 1e-12
before the log (as ``stages.distill.stage`` does). Errors are against the float64 input: max |Δp|,
mean KL(p_τ ‖ q_τ) in nats/pixel at τ = 1 and 4, argmax flips. Throughput is MB of float32
log-probabilities encoded or decoded per second. ``zstd B/px`` compresses each image alone
(zstd level 3, one image per chunk, as the store does); both "× smaller" columns compare
with raw float32 log-probabilities (8 B/px at C = 2).

Usage::

    python benchmarks/bench_encoding.py                    # 8 maps, 384², C = 2
    python benchmarks/bench_encoding.py --size 224 --count 32
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from _common import markdown_table, print_header, time_it

from storage_schema import decode_logprobs, encode_logprobs

logger = logging.getLogger(__name__)

FLOOR = 1e-12  # the students' log floor (stages.distill.stage)
TAUS = (1.0, 4.0)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma).astype(np.float64)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """(H, W) blurred Gaussian noise rescaled to zero mean and unit standard deviation."""
    f = _blur(rng.standard_normal((size, size)), sigma)
    return (f - f.mean()) / f.std()


def soft_map(rng: np.random.Generator, size: int, classes: int) -> np.ndarray:
    """One realistic float64 log-probability map (C, H, W)."""
    layout = np.zeros((size, size), np.int64)
    for c in range(1, classes):  # class c where its smooth field is high (~25 % of the image)
        field = _smooth_noise(rng, size, size / 12)
        layout[field > np.quantile(field, 1.0 - 0.25 / (classes - 1))] = c
    width = rng.uniform(1.5, 4.0) * size / 224  # boundary band half-width in px
    amp = 6.0 + 10.0 * _sigmoid(1.5 * _smooth_noise(rng, size, size / 8))  # (H, W) in [6, 16]
    logits = np.empty((classes, size, size))
    for c in range(classes):
        inside = (layout == c).astype(np.uint8)
        outside = 1 - inside
        d = cv2.distanceTransform(inside, cv2.DIST_L2, 5) - cv2.distanceTransform(
            outside, cv2.DIST_L2, 5
        )  # (H, W) signed distance to class c's boundary, > 0 inside
        logits[c] = 0.5 * amp * np.tanh(d / width) + 0.3 * _smooth_noise(rng, size, 2.0)
    return _log_softmax(logits[None])[0]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _renorm_log(p: np.ndarray) -> np.ndarray:
    """float32 probabilities (N, C, H, W) -> renormalised, floored log-probabilities."""
    p = p / p.sum(axis=1, keepdims=True)
    return np.log(np.maximum(p, FLOOR)).astype(np.float32)


@dataclass(frozen=True)
class Encoding:
    """An encoder (float32 log-p (N, C, H, W) -> array) and decoder (array -> float32 log-p)."""

    name: str
    encode: Callable[[np.ndarray], np.ndarray]
    decode: Callable[[np.ndarray], np.ndarray]


ENCODINGS = (
    Encoding("int8 log-p ×8 (store)", lambda x: encode_logprobs(x, axis=1), decode_logprobs),
    Encoding(
        "float16 p",
        lambda x: np.exp(x).astype(np.float16),
        lambda e: _renorm_log(e.astype(np.float32)),
    ),
    Encoding(
        "uint8 p·255",
        lambda x: np.rint(np.exp(x) * 255).astype(np.uint8),
        lambda e: _renorm_log(e.astype(np.float32)),
    ),
    Encoding("float32 log-p", lambda x: x.astype(np.float32, copy=True), lambda e: e.copy()),
)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def errors(true_logp: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """max |Δp|, mean KL(p_τ ‖ q_τ) per pixel for each τ, argmax flips (N, C, H, W inputs)."""
    q_log = decoded.astype(np.float64)
    out = {"max_dp": float(np.abs(np.exp(true_logp) - np.exp(q_log)).max())}
    for tau in TAUS:
        pt, qt = _log_softmax(true_logp / tau), _log_softmax(q_log / tau)
        out[f"kl_{tau:g}"] = float((np.exp(pt) * (pt - qt)).sum(axis=1).mean())
    out["flips"] = int((true_logp.argmax(axis=1) != q_log.argmax(axis=1)).sum())
    return out


def zstd_bytes(encoded: np.ndarray) -> int:
    """Bytes after zstd level 3, one image per frame; 0 when numcodecs is unavailable."""
    try:
        from numcodecs import Zstd
    except ImportError:
        return 0
    codec = Zstd(level=3)
    return sum(len(codec.encode(np.ascontiguousarray(img))) for img in encoded)


def row(enc: Encoding, logp64: np.ndarray, args: argparse.Namespace) -> dict:
    """Size, error and throughput of one encoding."""
    x = logp64.astype(np.float32)  # (N, C, H, W) what precompute hands the encoder
    encoded = enc.encode(x)
    decoded = enc.decode(encoded)
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    megabytes = x.nbytes / 1e6
    t_enc = time_it(lambda: enc.encode(x), args.repeats, args.warmup)
    t_dec = time_it(lambda: enc.decode(encoded), args.repeats, args.warmup)
    return {
        "bpp": encoded.nbytes / pixels,
        "zbpp": zstd_bytes(encoded) / pixels,
        **errors(logp64, decoded),
        "enc": megabytes / t_enc.median,
        "dec": megabytes / t_dec.median,
        "spread": max(t_enc.spread, t_dec.spread),
        "pixels": pixels,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384, help="map side (e.g. 224 or 384)")
    parser.add_argument("--count", type=int, default=8, help="number of maps")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.classes < 2 or args.size < 16 or args.count < 1:
        parser.error("--classes must be >= 2, --size >= 16 and --count >= 1.")
    rng = np.random.default_rng(args.seed)
    logp = np.stack([soft_map(rng, args.size, args.classes) for _ in range(args.count)])
    print_header("Soft-label encodings (realistic maps)")
    p_min = np.exp(logp.min(axis=1))  # (N, H, W) smallest class probability per pixel
    print(
        f"{args.count} maps of {args.classes}×{args.size}², pixels with p_min < 1e-3: "
        f"{(p_min < 1e-3).mean():.1%}, < 1e-6: {(p_min < 1e-6).mean():.1%}; "
        f"median p_min {np.median(p_min):.1e}\n"
    )
    results = {enc.name: row(enc, logp, args) for enc in ENCODINGS}
    base = results["float32 log-p"]["bpp"]
    headers = ["encoding", "B/px", "× smaller", "zstd B/px", "× smaller (zstd)", "max abs Δp"]
    headers += [f"KL τ={t:g} (nats/px)" for t in TAUS]
    headers += ["argmax flips", "encode MB/s", "decode MB/s", "spread"]
    rows = [
        [
            name,
            f"{r['bpp']:g}",
            f"{base / r['bpp']:.1f}×",
            f"{r['zbpp']:.3f}",
            f"{base / r['zbpp']:.1f}×" if r["zbpp"] else "n/a",
            f"{r['max_dp']:.2e}",
            *(f"{r[f'kl_{t:g}']:.2e}" for t in TAUS),
            f"{r['flips']} / {r['pixels']}",
            f"{r['enc']:.0f}",
            f"{r['dec']:.0f}",
            f"{r['spread']:.0%}",
        ]
        for name, r in results.items()
    ]
    print(markdown_table(headers, rows))
    print(
        f"\nmedian of {args.repeats} runs after {args.warmup} warm-up; MB/s of float32 "
        "log-probabilities; spread = worst (max − min) / median of encode and decode."
    )


if __name__ == "__main__":
    main()
