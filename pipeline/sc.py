"""Similarity-based correction (SC): force every remaining false pixel right.

Per image and GT class c: queries are the pixels of class c still wrong, the database the pixels
of class c that are right (same image); each query gets the WHOLE soft vector of its nearest
database pixel by cosine similarity of L2-normalised teacher features. A class with no right
pixel in the image falls back to a cross-image :class:`ClassBank` of correct pixels, then to a
smoothed one-hot. Afterwards argmax == GT everywhere (checked).

Argmax ties resolve to the lowest class index (``torch.argmax``) everywhere in this package.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pipeline.check import check_shape, class_argmax
from pipeline.search import BACKENDS, nearest_neighbours, resolve_backend

logger = logging.getLogger(__name__)

SC_COUNT_KEYS = ("sc_in_image", "sc_bank", "sc_onehot")


@dataclass
class ClassBank:
    """Cross-image per-class bank of correct pixels.

    Attributes:
        features: c -> (n_c, F) L2-normalised features.
        soft: c -> (n_c, C) soft vectors (argmax == c).
    """

    features: dict[int, torch.Tensor] = field(default_factory=dict)
    soft: dict[int, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_samples(
        cls, samples: Sequence[dict[int, tuple[torch.Tensor, torch.Tensor]]]
    ) -> ClassBank:
        """Concatenate per-image samples (see :func:`sample_correct_pixels`) in the given order."""
        feats: dict[int, list[torch.Tensor]] = {}
        soft: dict[int, list[torch.Tensor]] = {}
        for sample in samples:
            for c, (f, s) in sample.items():
                feats.setdefault(c, []).append(f)
                soft.setdefault(c, []).append(s)
        return cls(
            features={c: torch.cat(v) for c, v in sorted(feats.items())},
            soft={c: torch.cat(v) for c, v in sorted(soft.items())},
        )

    def size(self, c: int) -> int:
        """Number of entries of class c (0 if absent)."""
        return len(self.features[c]) if c in self.features else 0

    def to(self, device: torch.device | str) -> ClassBank:
        """A copy with every tensor on ``device``."""
        return ClassBank(
            features={c: t.to(device) for c, t in self.features.items()},
            soft={c: t.to(device) for c, t in self.soft.items()},
        )


@dataclass(frozen=True)
class SCConfig:
    """SC settings.

    Attributes:
        backend: nearest-neighbour backend, one of :data:`pipeline.search.BACKENDS`.
        smoothing: epsilon of the last-resort smoothed one-hot (1-eps on GT, eps/(C-1) elsewhere),
            in [0, 0.5) so that its argmax is the GT class for any C >= 2.
        use_bank: consult the cross-image bank before the smoothed one-hot.
        batch_size: queries per matmul chunk of the search.
    """

    backend: str = "auto"
    smoothing: float = 0.1
    use_bank: bool = True
    batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"SCConfig.backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}."
            )
        if not 0.0 <= self.smoothing < 0.5:
            raise ValueError(f"SCConfig.smoothing must lie in [0, 0.5); got {self.smoothing}.")
        if self.batch_size < 1:
            raise ValueError(f"SCConfig.batch_size must be >= 1; got {self.batch_size}.")


def check_label_map(gt: torch.Tensor, num_classes: int, name: str = "gt") -> None:
    """Raise unless ``gt`` holds integer class ids in [0, num_classes)."""
    if gt.dtype.is_floating_point or gt.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids (long); got dtype {gt.dtype}.")
    if gt.numel() and (int(gt.min()) < 0 or int(gt.max()) >= num_classes):
        raise ValueError(
            f"{name} values must lie in [0, {num_classes}) (the probs' C); "
            f"got [{int(gt.min())}, {int(gt.max())}]."
        )


def sample_correct_pixels(
    probs: torch.Tensor,
    feats: torch.Tensor,
    gt: torch.Tensor,
    per_class: int,
    generator: torch.Generator,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Up to ``per_class`` random correct pixels of each class of ONE image.

    Args:
        probs: (C, H, W) soft label.
        feats: (F, H, W) features at the same resolution.
        gt: (H, W) long.
        per_class: maximum number of pixels per class.
        generator: source of the random choice.

    Returns:
        c -> (features (n_c, F) L2-normalised, soft vectors (n_c, C)); classes without a correct
        pixel are absent.
    """
    sizes = check_shape(probs, "C H W", "probs")
    check_shape(feats, f"F {sizes['H']} {sizes['W']}", "feats")
    check_shape(gt, f"{sizes['H']} {sizes['W']}", "gt")
    check_label_map(gt, sizes["C"])
    right = (class_argmax(probs, 0) == gt).flatten()  # (H*W,)
    gt_flat = gt.flatten()  # (H*W,)
    f_flat = F.normalize(feats.flatten(1).T.float(), dim=1)  # (H*W, F)
    p_flat = probs.flatten(1).T  # (H*W, C)
    out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for c in range(sizes["C"]):
        idx = torch.nonzero(right & (gt_flat == c)).squeeze(1)  # (n,)
        if len(idx) == 0:
            continue
        perm = torch.randperm(len(idx), generator=generator, device=generator.device)
        idx = idx[perm[:per_class].to(idx.device)]
        out[c] = (f_flat[idx], p_flat[idx])
    return out


def smoothed_onehot(
    labels: torch.Tensor, num_classes: int, eps: float, dtype: torch.dtype
) -> torch.Tensor:
    """(n,) class ids -> (n, C) vectors: 1-eps on the label, eps/(C-1) elsewhere."""
    off = eps / (num_classes - 1) if num_classes > 1 else 0.0
    out = torch.full((len(labels), num_classes), off, dtype=dtype, device=labels.device)
    out[torch.arange(len(labels), device=labels.device), labels] = 1.0 - eps
    return out


def _fill_class(
    q_feats: torch.Tensor,
    db: tuple[torch.Tensor, torch.Tensor] | None,
    c: int,
    num_classes: int,
    cfg: SCConfig,
    backend: str,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, int]:
    """Soft vectors (n_q, C) for the queries of class c, and how many fell back to one-hot.

    ``db`` is (features (n_db, F), soft (n_db, C)) or None (straight to the smoothed one-hot).
    """
    labels = torch.full((len(q_feats),), c, dtype=torch.long, device=q_feats.device)
    if db is None:
        return smoothed_onehot(labels, num_classes, cfg.smoothing, dtype), len(labels)
    db_feats, db_soft = db
    nn = nearest_neighbours(q_feats, db_feats, backend, normalize=True, batch_size=cfg.batch_size)
    copied = db_soft[nn].to(dtype)  # (n_q, C)
    tie = class_argmax(copied, 1) != c  # a copied vector must keep argmax c
    if tie.any():
        copied[tie] = smoothed_onehot(labels[tie], num_classes, cfg.smoothing, dtype)
    return copied, int(tie.sum())


def _bank_entry(
    bank: ClassBank | None, c: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Bank features and soft vectors of class c on ``device``, or None when absent/empty."""
    if bank is None or bank.size(c) == 0:
        return None
    return bank.features[c].to(device), bank.soft[c].to(device)


def similarity_correct(
    probs: torch.Tensor,
    feats: torch.Tensor,
    gt: torch.Tensor,
    cfg: SCConfig,
    bank: ClassBank | None = None,
) -> tuple[torch.Tensor, dict[str, int]]:
    """Correct every false pixel by copying its nearest correct pixel's soft vector.

    Args:
        probs: (B, C, H, W) probabilities.
        feats: (B, F, H, W) teacher features at the same resolution.
        gt: (B, H, W) long.
        cfg: backend, smoothing and bank use.
        bank: optional cross-image bank for classes with no correct pixel in an image.

    Returns:
        (corrected probs (B, C, H, W), counts {"sc_in_image", "sc_bank", "sc_onehot"} of pixels
        filled by each source).

    Raises:
        RuntimeError: if the all-correct invariant fails afterwards (a bug).
    """
    sizes = check_shape(probs, "B C H W", "probs")
    check_shape(feats, f"{sizes['B']} F {sizes['H']} {sizes['W']}", "feats")
    check_shape(gt, f"{sizes['B']} {sizes['H']} {sizes['W']}", "gt")
    num_classes = sizes["C"]
    check_label_map(gt, num_classes)
    backend = resolve_backend(cfg.backend, probs.device)
    use_bank = bank if cfg.use_bank else None
    out = probs.clone()
    counts = dict.fromkeys(SC_COUNT_KEYS, 0)
    wrong_all = class_argmax(probs, 1) != gt  # (B, H, W)
    for b in torch.nonzero(wrong_all.flatten(1).any(dim=1)).squeeze(1).tolist():
        f_flat = feats[b].flatten(1).T  # (H*W, F)
        p_flat = probs[b].flatten(1).T  # (H*W, C), source of copies (never modified)
        o_flat = out[b].flatten(1).T  # (H*W, C), a view of out
        wrong, gt_flat = wrong_all[b].flatten(), gt[b].flatten()  # (H*W,)
        for c in gt_flat[wrong].unique().tolist():
            is_c = gt_flat == c
            q_idx = torch.nonzero(is_c & wrong).squeeze(1)  # (n_q,)
            d_idx = torch.nonzero(is_c & ~wrong).squeeze(1)  # (n_db,)
            if len(d_idx):
                db, source = (f_flat[d_idx], p_flat[d_idx]), "sc_in_image"
            else:
                db = _bank_entry(use_bank, c, probs.device)
                source = "sc_bank" if db is not None else "sc_onehot"
            filled, n_onehot = _fill_class(
                f_flat[q_idx], db, c, num_classes, cfg, backend, probs.dtype
            )
            o_flat[q_idx] = filled
            counts[source] += len(q_idx) - n_onehot  # ties fell back to the one-hot
            counts["sc_onehot"] += n_onehot
    n_bad = int((class_argmax(out, 1) != gt).sum())
    if n_bad:
        raise RuntimeError(
            f"SC left {n_bad} pixels whose argmax differs from the GT; this is a bug."
        )
    return out, counts


def needs_bank(probs: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) bool: some GT class of the image has wrong pixels but no correct pixel there.

    Args:
        probs: (B, C, H, W).
        gt: (B, H, W) long.
    """
    sizes = check_shape(probs, "B C H W", "probs")
    check_shape(gt, f"{sizes['B']} {sizes['H']} {sizes['W']}", "gt")
    n_img, num_classes = sizes["B"], sizes["C"]
    check_label_map(gt, num_classes)
    wrong = (class_argmax(probs, 1) != gt).flatten()  # (B*H*W,)
    image = torch.arange(n_img, device=gt.device).repeat_interleave(sizes["H"] * sizes["W"])
    key = image * num_classes + gt.flatten()  # (B*H*W,) image-class id
    n_wrong = torch.bincount(key[wrong], minlength=n_img * num_classes).view(n_img, num_classes)
    n_right = torch.bincount(key[~wrong], minlength=n_img * num_classes).view(n_img, num_classes)
    return ((n_wrong > 0) & (n_right == 0)).any(dim=1)
