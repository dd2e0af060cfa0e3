"""The teacher team at inference: T, TA_f and TA_b loaded once and run together.

The team is state of its owner (a precompute worker, live KD), never a module cache; it is
identified by the SHA-256 of its three checkpoints (:func:`team_key`), not by their paths.
The teacher may be a TorchScript file (:mod:`pipeline.torchscript`); when it gives no
features, SC reads TA_f's last decoder map instead (:func:`sc_feature_source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class TeamOutput:
    """Softmax probabilities of the three networks and the SC features.

    Attributes:
        p_t, p_f, p_b: (B, C, H, W) float32 probabilities of T, TA_f and TA_b.
        feats: (B, F, H, W) float32 last decoder feature map of T, or of TA_f when T has
            none (``feature_source`` says which).
    """

    p_t: torch.Tensor
    p_f: torch.Tensor
    p_b: torch.Tensor
    feats: torch.Tensor
    feature_source: str = "teacher"
    calibrated: dict[str, torch.Tensor] | None = None  # "fp_cal"/"bd_cal": temperature-scaled

    @property
    def assistants(self) -> dict[str, torch.Tensor]:
        """Assistant key of :data:`pipeline.variants.ASSISTANTS` -> probabilities (the
        temperature-scaled maps too when the team has temperatures)."""
        return {"fp": self.p_f, "bd": self.p_b, **(self.calibrated or {})}


def sc_feature_source(teacher_has_features: bool) -> str:
    """Which network's last decoder map SC reads: "teacher", or "assistant-false-pixel" for a
    teacher without features (a TorchScript teacher returning logits only)."""
    return "teacher" if teacher_has_features else "assistant-false-pixel"


def team_key(teacher: Path, fp: Path, bd: Path) -> str:
    """One SHA-256 over the three files' SHA-256 (T, TA_f, TA_b order)."""
    import hashlib

    from pipeline.checkpoint import file_sha256

    joined = ":".join(file_sha256(p) for p in (teacher, fp, bd))
    return hashlib.sha256(joined.encode()).hexdigest()


class Team:
    """Teacher plus both assistants, in eval mode on one device."""

    def __init__(
        self,
        teacher: nn.Module,
        fp: nn.Module,
        bd: nn.Module,
        device: torch.device,
        temperatures: dict[str, float] | None = None,
    ):
        """``temperatures``: {"fp": T_f, "bd": T_b} (see :func:`fit_temperatures`) adds the
        assistants' temperature-scaled maps ("fp_cal", "bd_cal") to every output."""
        self.device = device
        self.nets = [net.to(device).eval() for net in (teacher, fp, bd)]
        self.temperatures = temperatures

    def close(self) -> None:
        """Drop the networks (and the CUDA cache they used)."""
        self.nets = []
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @classmethod
    def load(
        cls,
        teacher: Path,
        fp: Path,
        bd: Path,
        device: torch.device,
        temperatures: dict[str, float] | None = None,
    ) -> Team:
        """The team from its files: T a checkpoint or a TorchScript file, TA_f and TA_b
        checkpoints (see :meth:`__init__` for ``temperatures``)."""
        from pipeline.checkpoint import build_from_checkpoint
        from pipeline.torchscript import build_teacher

        nets = (build_teacher(teacher)[0], *(build_from_checkpoint(p)[0] for p in (fp, bd)))
        return cls(*nets, device=device, temperatures=temperatures)

    @torch.inference_mode()
    def assistant_logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"fp": TA_f's, "bd": TA_b's} float32 logits (B, C, H, W) for ``images``."""
        images = images.to(self.device, non_blocking=True)
        _, fp, bd = self.nets
        return {"fp": fp(images).float(), "bd": bd(images).float()}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> TeamOutput:
        """Run the team on (B, 3, H, W) float images in [0, 1]."""
        images = images.to(self.device, non_blocking=True)
        teacher, fp, bd = self.nets
        logits_t, feats = teacher.forward_features(images)
        source = sc_feature_source(feats is not None)
        if feats is None:  # T gives logits only: SC reads TA_f's last decoder map
            logits_f, feats = fp.forward_features(images)
        else:
            logits_f = fp(images)
        logits_f, logits_b = logits_f.float(), bd(images).float()
        calibrated = None
        if self.temperatures is not None:
            calibrated = {
                "fp_cal": (logits_f / self.temperatures["fp"]).softmax(1),
                "bd_cal": (logits_b / self.temperatures["bd"]).softmax(1),
            }
        return TeamOutput(
            p_t=logits_t.float().softmax(1),
            p_f=logits_f.softmax(1),
            p_b=logits_b.softmax(1),
            feats=feats.float(),
            feature_source=source,
            calibrated=calibrated,
        )


MAX_FIT_PIXELS = 2_000_000  # per assistant: more add nothing to a 1-parameter fit


def fit_temperatures(team: Team, split, positions, batch_size: int, source: str) -> dict:
    """Each assistant's temperature, fitted by NLL on the images ``positions`` of ``split``.

    Args:
        team: the team (its assistants are scored).
        split: a :class:`stages.data.SplitData` (the precompute's train split).
        positions: positions in ``split`` of the images to fit on.
        batch_size: images per forward.
        source: what the images are, recorded with the result (e.g. "teacher val").

    Returns:
        {"fp": T_f, "bd": T_b, "images": n, "pixels": n_pixels (every stride-th pixel when
        the images hold more than :data:`MAX_FIT_PIXELS`), "source": source, "nll_before":
        {...}, "nll_after": {...}, "at_bound": [...]}: the provenance record of ``plc_cal``.
    """
    from pipeline.calibration import fit_temperature, temperature_nll

    logits: dict[str, list[torch.Tensor]] = {"fp": [], "bd": []}
    labels = []
    idx_all = torch.as_tensor(positions, dtype=torch.int64)
    stride = 1  # every stride-th pixel, so at most about MAX_FIT_PIXELS are held
    for lo in range(0, len(idx_all), batch_size):
        images, gt = split.batch(idx_all[lo : lo + batch_size], team.device)
        if lo == 0:
            stride = max(1, -(-len(idx_all) * gt[0].numel() // MAX_FIT_PIXELS))
        for key, z in team.assistant_logits(images).items():
            logits[key].append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])[::stride].cpu())
        labels.append(gt.reshape(-1)[::stride].cpu())
    y = torch.cat(labels)
    out: dict = {"images": len(idx_all), "pixels": len(y), "source": source}
    out["nll_before"], out["nll_after"] = {}, {}
    for key, parts in logits.items():
        z = torch.cat(parts)
        t = fit_temperature(z, y)
        out[key] = t
        # 6 decimals, as the temperatures' 4: the record is the same whatever the threads
        out["nll_before"][key] = round(temperature_nll(z, y, 1.0), 6)
        out["nll_after"][key] = round(temperature_nll(z, y, t), 6)
    # a fit at the search bound: the NLL wanted a still flatter (or sharper) map
    out["at_bound"] = [k for k in logits if out[k] in (0.05, 20.0)]
    return out
