"""The teacher team at inference: T, TA_f and TA_b loaded once and run together.

The team is state of its owner (a precompute worker, live KD), never a module cache; it is
identified by the SHA-256 of its three checkpoints (:func:`team_key`), not by their paths.
The teacher may be a TorchScript file (:mod:`pipeline.torchscript`) or imported
probability maps (:mod:`pipeline.imported`: a lookup by image id, so the team is called
with the batch's ids); when it gives no features, SC reads an assistant's last decoder map
instead (:func:`sc_feature_source`: TA_f's by default, TA_b's, or both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stages.precompute.config import SC_FEATURES


@dataclass
class TeamOutput:
    """Softmax probabilities of the three networks and the SC features.

    Attributes:
        p_t, p_f, p_b: (B, C, H, W) float32 probabilities of T, TA_f and TA_b.
        feats: (B, F, H, W) float32 last decoder feature map of T or, when T has none, of
            TA_f, TA_b or both (``feature_source`` says which; see :func:`assistant_features`).
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


def sc_feature_source(teacher_has_features: bool, choice: str | None = None) -> str:
    """Which network's last decoder map SC reads: "teacher", or for a teacher without
    features (a TorchScript teacher returning logits only, an imported one) ``choice``:
    one of :data:`~stages.precompute.config.SC_FEATURES` (None: "assistant-false-pixel")."""
    return "teacher" if teacher_has_features else (choice or SC_FEATURES[0])


def assistant_features(
    fp: nn.Module, bd: nn.Module, images: torch.Tensor, source: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TA_f's and TA_b's logits and SC's features from the assistants (T gives none).

    Args:
        fp, bd: TA_f and TA_b.
        images: (B, 3, H, W) images on their device.
        source: "assistant-false-pixel" (TA_f's last decoder map), "assistant-boundary"
            (TA_b's) or "both": each map L2-normalised per pixel, then concatenated, so
            the cosine similarity SC ranks by is the mean of the two maps' cosines (neither
            map outweighs the other by its scale).

    Returns:
        ``(logits_f, logits_b, feats)``: (B, C, H, W), (B, C, H, W), (B, F, H, W).
    """
    if source == "assistant-false-pixel":
        logits_f, feats = fp.forward_features(images)
        return logits_f, bd(images), feats
    if source == "assistant-boundary":
        logits_b, feats = bd.forward_features(images)
        return fp(images), logits_b, feats
    if source != "both":
        raise ValueError(f"SC feature source must be one of {', '.join(SC_FEATURES)}, "
                         f"got {source!r}.")  # fmt: skip
    logits_f, feats_f = fp.forward_features(images)
    logits_b, feats_b = bd.forward_features(images)
    unit = [F.normalize(f.float(), dim=1) for f in (feats_f, feats_b)]  # per pixel, over F
    return logits_f, logits_b, torch.cat(unit, dim=1)  # feats: (B, F_f + F_b, H, W)


def team_key(teacher: Path, fp: Path, bd: Path) -> str:
    """One SHA-256 over the three networks' SHA-256 (T, TA_f, TA_b order; T's digest for an
    imported teacher, :func:`pipeline.torchscript.teacher_sha256`)."""
    import hashlib

    from pipeline.checkpoint import file_sha256
    from pipeline.torchscript import teacher_sha256

    joined = ":".join([teacher_sha256(teacher), *(file_sha256(p) for p in (fp, bd))])
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
        sc_features: str | None = None,
    ):
        """``temperatures``: {"fp": T_f, "bd": T_b} (see :func:`fit_temperatures`) adds the
        assistants' temperature-scaled maps ("fp_cal", "bd_cal") to every output;
        ``sc_features``: whose features SC reads when T gives none (:func:`sc_feature_source`)."""
        self.device = device
        self.nets = [net.to(device).eval() for net in (teacher, fp, bd)]
        self.temperatures = temperatures
        self.sc_features = sc_features

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
        sc_features: str | None = None,
    ) -> Team:
        """The team from its files: T a checkpoint, a TorchScript file or an imported
        teacher, TA_f and TA_b checkpoints (see :meth:`__init__` for the options)."""
        from pipeline.checkpoint import build_from_checkpoint
        from pipeline.torchscript import build_teacher

        nets = (build_teacher(teacher)[0], *(build_from_checkpoint(p)[0] for p in (fp, bd)))
        return cls(*nets, device=device, temperatures=temperatures, sc_features=sc_features)

    @torch.inference_mode()
    def assistant_logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"fp": TA_f's, "bd": TA_b's} float32 logits (B, C, H, W) for ``images``."""
        images = images.to(self.device, non_blocking=True)
        _, fp, bd = self.nets
        return {"fp": fp(images).float(), "bd": bd(images).float()}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, ids: Sequence[str] | None = None) -> TeamOutput:
        """Run the team on (B, 3, H, W) float images in [0, 1] whose image ids are ``ids``
        (an imported teacher needs them; networks ignore them)."""
        from pipeline.imported import ImportedTeacher

        images = images.to(self.device, non_blocking=True)
        teacher, fp, bd = self.nets
        if isinstance(teacher, ImportedTeacher):
            if ids is None or len(ids) != len(images):
                raise ValueError("an imported teacher needs the ids of the batch's images.")
            p_t, feats = teacher.probabilities(ids, self.device), None
        else:
            logits_t, feats = teacher.forward_features(images)
            p_t = logits_t.float().softmax(1)
        source = sc_feature_source(feats is not None, self.sc_features)
        if feats is None:  # T gives no features: SC reads the assistants'
            logits_f, logits_b, feats = assistant_features(fp, bd, images, source)
        else:
            logits_f, logits_b = fp(images), bd(images)
        logits_f, logits_b = logits_f.float(), logits_b.float()
        calibrated = None
        if self.temperatures is not None:
            calibrated = {
                "fp_cal": (logits_f / self.temperatures["fp"]).softmax(1),
                "bd_cal": (logits_b / self.temperatures["bd"]).softmax(1),
            }
        return TeamOutput(
            p_t=p_t,
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
