"""Relation-based KD with a live teacher: PA, IFVD, CIRKD and SPKD (rows of ``pipeline.kd_table``).

Each compares a relation computed inside each network — node-to-node similarities (PA),
pixel-to-class-centre similarities (IFVD), pixel-to-pixel and pixel-to-region similarities
across images and against a memory of teacher embeddings (CIRKD), image-to-image
similarities of the batch (SPKD) — so the two networks' widths may differ; where the
relation is per position, the student's map is resized (bilinear) to the teacher's grid.
Formulas are pure functions of tensors; the loss modules follow
:class:`pipeline.feature_kd.LiveLoss`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.check import check_shape
from pipeline.feature_kd import LiveLoss, nearest_labels, region_prototypes, resize_to

PA_PATCH = 2  # CIRKD's CriterionStructuralKD: 2×2 max-pooled nodes
MAX_NODES = 1024  # relation maps are nodes²: larger grids are average-pooled down to this


def _same_grid(student: Tensor, teacher: Tensor) -> Tensor:
    check_shape(student, "B C H W", "student")
    check_shape(teacher, f"{student.shape[0]} C H W", "teacher")
    return resize_to(student, teacher.shape[-2:])


def cap_nodes(x: Tensor, max_nodes: int = MAX_NODES) -> Tensor:
    """Average-pool (B, C, h, w) by the smallest integer factor that leaves at most
    ``max_nodes`` positions (CIRKD pools 4×4 on large maps for the same reason: the relation
    maps are quadratic in the positions)."""
    h, w = x.shape[-2:]
    if h * w <= max_nodes:
        return x
    k = math.ceil(math.sqrt(h * w / max_nodes))
    while math.ceil(h / k) * math.ceil(w / k) > max_nodes:
        k += 1
    return F.avg_pool2d(x, k, k, ceil_mode=True)


# --------------------------------------------------------------------------- PA (SKD)


def node_similarity(features: Tensor, patch: int = PA_PATCH) -> Tensor:
    """SKD's pair-wise similarity: max-pool ``patch``×``patch`` nodes, L2-normalise each
    node's vector, cosine of every pair: (B, C, h, w) -> (B, N, N)."""
    nodes = F.max_pool2d(features, patch, patch, ceil_mode=True) if patch > 1 else features
    nodes = F.normalize(cap_nodes(nodes).flatten(2), dim=1)  # (B, C, N)
    return nodes.transpose(1, 2) @ nodes


def pairwise_loss(student: Tensor, teacher: Tensor, patch: int = PA_PATCH) -> Tensor:
    """Pair-wise distillation (Liu et al. 2019, eq. 2; CIRKD's criterion): the mean squared
    difference of the two node-similarity maps, over images and node pairs."""
    student = _same_grid(student, teacher)
    return (
        (node_similarity(student, patch) - node_similarity(teacher.detach(), patch)).pow(2).mean()
    )


# --------------------------------------------------------------------------- IFVD


def class_centre_similarity(features: Tensor, labels: Tensor, classes: int) -> Tensor:
    """IFVD's intra-class feature variation map: per image and class the centre (the mean
    feature over the class's pixels, GT on the tap's grid), then per pixel the cosine
    between its feature and its class's centre (:func:`region_prototypes`; IFVD's code adds
    1e-6 to the pixel count instead, a guard for absent classes, which get no pixel here):
    (B, C, h, w) -> (B, h, w)."""
    centres, _ = region_prototypes(features, labels, classes)  # (B, K, C)
    onehot = F.one_hot(labels, classes).to(features.dtype)  # (B, h, w, K)
    per_pixel = torch.einsum("bhwk,bkc->bchw", onehot, centres)
    return F.cosine_similarity(features, per_pixel, dim=1)


def ifvd_loss(student: Tensor, teacher: Tensor, target: Tensor, classes: int) -> Tensor:
    """IFVD (Wang et al. 2020, eq. 3): MSE between the student's and the teacher's
    pixel-to-class-centre cosine maps (GT labels resampled nearest; IFVD's code)."""
    student = _same_grid(student, teacher)
    labels = nearest_labels(target, teacher.shape[-2:])
    s = class_centre_similarity(student, labels, classes)
    t = class_centre_similarity(teacher.detach(), labels, classes)
    return F.mse_loss(s, t)


# --------------------------------------------------------------------------- SPKD

SPKD_GAMMA = 3000.0  # Tung & Mori 2019, §4.1; mdistiller's SP feature weight


def batch_similarity(features: Tensor) -> Tensor:
    """SPKD's G: the (b, b) Gram matrix of the flattened maps, each row L2-normalised."""
    flat = features.flatten(1)
    return F.normalize(flat @ flat.T, dim=1)


def spkd_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori 2019, eq. 4): ‖G_S − G_T‖²_F / b² (without γ;
    the table's weight carries it). Any widths and grids."""
    check_shape(student, "B C H W", "student")
    check_shape(teacher, f"{student.shape[0]} C H W", "teacher")
    b = student.shape[0]
    return (batch_similarity(student) - batch_similarity(teacher.detach())).pow(2).sum() / b**2


# --------------------------------------------------------------------------- CIRKD

CIRKD_TAU = 0.1  # contrast temperature (CIRKD's --contrast-temperature)
CIRKD_KD_TAU = 1.0  # temperature of the KL over contrast logits (--contrast-kd-temperature)
CIRKD_WEIGHTS = (1.0, 0.1, 0.1)  # batch pixel-pair, memory pixel, memory region (its parser)
CIRKD_PIXEL_MEMORY, CIRKD_REGION_MEMORY = 20_000, 2_000  # per class (CIRKD's README)
CIRKD_PIXEL_SAMPLES, CIRKD_REGION_SAMPLES = 4_096, 1_024  # contrast sizes, over all classes
CIRKD_PIXELS_PER_IMAGE = 16  # teacher pixels enqueued per image and class (pixel_update_freq)


def batch_pair_loss(student: Tensor, teacher: Tensor, tau: float = CIRKD_TAU) -> Tensor:
    """CIRKD's mini-batch pixel-to-pixel distillation (Yang et al. 2022, eq. 3): for every
    ordered pair of images (i, j) of the batch, the similarities of each pixel of i to every
    pixel of j (L2-normalised embeddings) as a distribution over j's pixels at temperature
    τ; KL(teacher ‖ student) averaged over i's pixels, then over the b² pairs. The student
    is resized to the teacher's grid and both are average-pooled to at most
    :data:`MAX_NODES` positions (CIRKD pools 4×4 from 256 px). One image of the batch at a
    time: memory b · N², not b² · N²."""
    student = _same_grid(student, teacher)
    s = F.normalize(cap_nodes(student), dim=1).flatten(2).transpose(1, 2)  # (B, N, C)
    t = F.normalize(cap_nodes(teacher.detach()), dim=1).flatten(2).transpose(1, 2)
    b, n = s.shape[:2]
    total = s.new_zeros(())
    for i in range(b):
        log_ps = F.log_softmax(torch.einsum("nc,bmc->bnm", s[i], s) / tau, dim=2)
        log_pt = F.log_softmax(torch.einsum("nc,bmc->bnm", t[i], t) / tau, dim=2)
        total = total + F.kl_div(log_ps, log_pt, log_target=True, reduction="sum") / n
    return total / b**2


def contrast_kd(student: Tensor, teacher: Tensor, tau: float = CIRKD_KD_TAU) -> Tensor:
    """KL(softmax(t / τ) ‖ softmax(s / τ)) over the contrast columns, averaged over the
    rows (anchor pixels), times τ² (CIRKD's ``contrast_sim_kd``)."""
    log_ps, log_pt = F.log_softmax(student / tau, dim=1), F.log_softmax(teacher / tau, dim=1)
    return F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean") * tau**2


class TeacherMemory(nn.Module):
    """CIRKD's memory of teacher embeddings: per class a queue of pixel embeddings and one of
    region (class-mean) embeddings, L2-normalised, started from random unit vectors as
    CIRKD's are. Buffers: saved with the run's state, so a resumed run continues the
    same queues. Bounded: K · (pixel + region) · C floats."""

    def __init__(
        self, classes: int, dim: int, pixels: int = CIRKD_PIXEL_MEMORY,
        regions: int = CIRKD_REGION_MEMORY,
    ) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("pixel_queue", F.normalize(torch.randn(classes, pixels, dim), dim=2))
        self.register_buffer("region_queue", F.normalize(torch.randn(classes, regions, dim), dim=2))
        self.register_buffer("pixel_ptr", torch.zeros(classes, dtype=torch.long))
        self.register_buffer("region_ptr", torch.zeros(classes, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, teacher: Tensor, labels: Tensor, per_image: int = CIRKD_PIXELS_PER_IMAGE):
        """Add each image's class-mean embedding and up to ``per_image`` random pixels of
        each class present (teacher (B, C, h, w) already normalised, labels (B, h, w))."""
        size_p, size_r = self.pixel_queue.shape[1], self.region_queue.shape[1]
        for feat, lab in zip(teacher, labels, strict=True):
            flat, lab = feat.flatten(1), lab.flatten()  # (C, N), (N,)
            for c in torch.unique(lab).tolist():
                idx = (lab == c).nonzero()[:, 0]
                r = int(self.region_ptr[c])
                self.region_queue[c, r] = F.normalize(flat[:, idx].mean(1), dim=0)
                self.region_ptr[c] = (r + 1) % size_r
                k = min(len(idx), per_image)
                picked = flat[:, idx[torch.randperm(len(idx), device=idx.device)[:k]]].T
                p = int(self.pixel_ptr[c])
                if p + k >= size_p:  # CIRKD: the last k slots, then start over
                    self.pixel_queue[c, -k:] = F.normalize(picked, dim=1)
                    self.pixel_ptr[c] = 0
                else:
                    self.pixel_queue[c, p : p + k] = F.normalize(picked, dim=1)
                    self.pixel_ptr[c] = (p + k) % size_p

    def sample(self, which: str, count: int) -> Tensor:
        """``count`` random slots of every class's queue (the same slots for each class, as
        CIRKD samples): (K · count, C)."""
        queue = self.pixel_queue if which == "pixel" else self.region_queue
        idx = torch.randperm(queue.shape[1], device=queue.device)[:count]
        return queue[:, idx].reshape(-1, queue.shape[2])


class CIRKD(LiveLoss):
    """CIRKD (Yang et al. 2022): ``1 · batch pixel-pair KL + 0.1 · memory pixel contrast +
    0.1 · memory region contrast``. The memory terms project the student's embedding with
    CIRKD's head (1×1 conv, BN, ReLU, 1×1 conv to the teacher's width), normalise both,
    enqueue the batch's teacher embeddings (GT labels on the tap's grid), then compare the
    two networks' similarities to sampled memory entries (τ = 0.1) by KL (τ = 1). One
    process, CPU or GPU (no all-gather); memory bounded by the queue sizes."""

    def __init__(self, student_channels, teacher_channels, classes) -> None:
        super().__init__(student_channels, teacher_channels, classes)
        cs, ct = student_channels[0], teacher_channels[0]
        self.head = nn.Sequential(
            nn.Conv2d(cs, ct, 1, bias=False), nn.BatchNorm2d(ct), nn.ReLU(inplace=True),
            nn.Conv2d(ct, ct, 1, bias=False),
        )  # fmt: skip
        self.memory = TeacherMemory(classes, ct)

    def forward(self, student, teacher, target) -> Tensor:
        s_map = cap_nodes(_same_grid(student[1][0], teacher[1][0]))
        t_map = cap_nodes(teacher[1][0].detach())
        batch = batch_pair_loss(s_map, t_map)
        s = F.normalize(self.head(s_map), dim=1)
        t = F.normalize(t_map, dim=1)
        labels = nearest_labels(target, t.shape[-2:])
        self.memory.enqueue(t, labels)
        s_rows = s.permute(0, 2, 3, 1).reshape(-1, s.shape[1])
        t_rows = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
        k = self.classes
        terms = []
        for which, count in (("pixel", CIRKD_PIXEL_SAMPLES), ("region", CIRKD_REGION_SAMPLES)):
            x = self.memory.sample(which, count // k + 1)
            terms.append(contrast_kd(s_rows @ x.T / CIRKD_TAU, t_rows @ x.T / CIRKD_TAU))
        w_batch, w_pixel, w_region = CIRKD_WEIGHTS
        return w_batch * batch + w_pixel * terms[0] + w_region * terms[1]


class PairwiseKD(LiveLoss):
    """PA: :func:`pairwise_loss` on the one tap."""

    def forward(self, student, teacher, target) -> Tensor:
        return pairwise_loss(student[1][0], teacher[1][0])


class IFVDKD(LiveLoss):
    """IFVD: :func:`ifvd_loss` on the one tap."""

    def forward(self, student, teacher, target) -> Tensor:
        return ifvd_loss(student[1][0], teacher[1][0], target, self.classes)


class SPKD(LiveLoss):
    """SPKD: :func:`spkd_loss` on the one tap (γ is the table's weight)."""

    def forward(self, student, teacher, target) -> Tensor:
        return spkd_loss(student[1][0], teacher[1][0])
