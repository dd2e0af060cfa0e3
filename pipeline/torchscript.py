"""TorchScript teachers: a ``torch.jit.save`` file as the teacher T, without its Python code.

The contract (docs/commands.md, "TorchScript teachers"): the script maps (B, 3, H, W) float32
RGB images in [0, 1] — plc-kd applies no mean/std normalisation, the script carries its own —
to logits (B, C, H, W) at the input's size, or to a tuple ``(logits, features)`` with
features (B, F, H', W'), any size: they are resized bilinearly to (H, W) for SC, which
matches pixels by the cosine similarity of full-resolution features. A script returning
logits only gives no features; SC then reads TA_f's (``stages.precompute.team``).

:func:`build_teacher` is the one loader of ``--teacher``: a TorchScript file becomes a
:class:`ScriptedTeacher`, a plc-kd checkpoint is rebuilt as before, and a folder written by
``plc import-teacher`` becomes a :class:`pipeline.imported.ImportedTeacher` (the third kind,
"imported": T's probability maps, looked up by image id); :func:`load_teacher` adds the
contract check on real images that the stages run before any work, :func:`teacher_sha256`
the digest provenance records for each kind.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

CONTRACT = (
    "a TorchScript teacher maps (B, 3, H, W) float32 RGB images in [0, 1] (no normalisation "
    "by plc-kd) to logits (B, C, H, W), or to a tuple (logits, features (B, F, H', W'))"
)
_HINT = "export a script that keeps it (docs/commands.md: TorchScript teachers)"


def is_torchscript(path: str | Path) -> bool:
    """True when ``path`` is a TorchScript archive (``torch.jit.save``): a zip file holding
    ``<name>/constants.pkl``, which a ``torch.save`` file never has."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


class ScriptedTeacher(nn.Module):
    """A TorchScript module behind the registry networks' interface.

    ``forward(x)`` gives the logits; ``forward_features(x)`` gives ``(logits, features)``
    with the features resized to the logits' (H, W), or ``(logits, None)`` when the script
    returns logits only. The outputs are not checked here: :func:`check_contract` does that
    once, on a real batch, before any work.
    """

    def __init__(self, script: torch.jit.ScriptModule, path: Path) -> None:
        super().__init__()
        self.script = script
        self.path = path

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, 3, H, W) images → logits (B, C, H, W) and features (B, F, H, W) or None."""
        out = self.script(x)
        if not isinstance(out, tuple):
            return out, None
        logits, feats = out
        if feats.shape[-2:] != logits.shape[-2:]:  # (B, F, H', W') -> (B, F, H, W)
            feats = F.interpolate(
                feats, size=logits.shape[-2:], mode="bilinear", align_corners=False
            )
        return logits, feats

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) images → logits (B, C, H, W)."""
        return self.forward_features(x)[0]


def load_torchscript(path: str | Path, map_location: Any = "cpu") -> ScriptedTeacher:
    """``torch.jit.load`` ``path`` into a :class:`ScriptedTeacher` in ``eval()`` mode.

    Raises:
        ValueError: the archive cannot be loaded (one sentence with torch's first line).
    """
    path = Path(path)
    try:
        script = torch.jit.load(str(path), map_location=map_location)
    except Exception as err:  # torch raises RuntimeError subclasses with long C++ traces
        raise ValueError(
            f"TorchScript teacher {path} could not be loaded ({_first_line(err)}); re-export "
            "it with torch.jit.save from the same or an older torch release."
        ) from err
    return ScriptedTeacher(script, path).eval()


def build_teacher(path: str | Path, map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """The teacher ``path`` names: a TorchScript file, a plc-kd checkpoint or an imported
    teacher (a folder), in ``eval()``.

    Args:
        path: the ``--teacher`` file.
        map_location: where the network is loaded (a device name).

    Returns:
        ``(model, meta)``: a :class:`ScriptedTeacher`, the rebuilt registry network
        (:func:`pipeline.checkpoint.build_from_checkpoint`) or an
        :class:`~pipeline.imported.ImportedTeacher`, and :func:`teacher_meta`'s dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is no kind, or does not load.
    """
    from pipeline.checkpoint import build_from_checkpoint
    from pipeline.imported import ImportedTeacher, is_imported, open_imported

    if is_imported(path):
        maps = open_imported(path)
        return ImportedTeacher(maps).eval(), _imported_meta(maps)
    if _is_script_file(path):
        return load_torchscript(path, map_location), _script_meta()
    with _neither(path):
        model, meta = build_from_checkpoint(path, map_location)
    return model, meta | {"teacher_kind": "checkpoint"}


def load_teacher(path: str | Path, images: Tensor, num_classes: int) -> tuple[nn.Module, dict]:
    """:func:`build_teacher` on ``images``' device; a TorchScript teacher is first run on
    ``images`` (:func:`check_contract`), so a wrong export fails before any work.

    Args:
        path: the ``--teacher`` file.
        images: (B, 3, H, W) float32 RGB in [0, 1]: real images of the dataset store.
        num_classes: C of the dataset store.

    Returns:
        ``(model, meta)``: :func:`build_teacher`'s, with ``meta["features"]``: whether T
        gives SC features (every registry network does; an imported teacher never does).

    Raises:
        ValueError: the file is no kind, does not load, or breaks the contract (an imported
            teacher's classes and size are checked against ``images``; its manifest and
            ids by the stage, :meth:`~pipeline.imported.ImportedTeacher.fit_problems`).
    """
    from pipeline.imported import ImportedTeacher

    model, meta = build_teacher(path)
    model = model.to(images.device).eval()
    features = True
    if isinstance(model, ScriptedTeacher):
        features = check_contract(model, images, num_classes)
    elif isinstance(model, ImportedTeacher):
        features = False
        _, c, h, w = model.maps.probs.shape
        if (c, h, w) != (num_classes, *images.shape[-2:]):
            raise ValueError(
                f"imported teacher {path} holds maps of {c} classes at {h}×{w}, the dataset "
                f"store has {num_classes} at {images.shape[-2]}×{images.shape[-1]}; import "
                "the maps for this store (`plc import-teacher --dataset ...`)."
            )
    return model, meta | {"features": features}


def teacher_meta(path: str | Path) -> dict:
    """What the teacher ``path`` is, without building it.

    Returns:
        The checkpoint's metadata (without ``state_dict``) or, for TorchScript,
        ``{"model_name": None, "config": {}}``, for an imported teacher ``{"model_name":
        None, "config": {"import": <its summary>}}``; with ``teacher_kind``: "checkpoint",
        "torchscript" or "imported".

    Raises:
        FileNotFoundError, ValueError: as :func:`build_teacher`.
    """
    from pipeline.checkpoint import load_checkpoint
    from pipeline.imported import is_imported, open_imported

    if is_imported(path):
        return _imported_meta(open_imported(path))
    if _is_script_file(path):
        return _script_meta()
    with _neither(path):
        meta = load_checkpoint(path)
    meta.pop("state_dict")
    return meta | {"teacher_kind": "checkpoint"}


def teacher_sha256(path: str | Path) -> str:
    """What provenance records as T's SHA-256: the file's for a checkpoint or TorchScript
    file, the content digest for an imported teacher (a folder; its ``digest`` attribute)."""
    from pipeline.checkpoint import file_sha256
    from pipeline.imported import is_imported, open_imported

    return open_imported(path).digest if is_imported(path) else file_sha256(path)


def has_no_architecture(path: str | Path) -> bool:
    """True for a teacher an assistant cannot copy: a TorchScript file or an imported one."""
    from pipeline.imported import is_imported

    return is_imported(path) or _is_script_file(path)


def _is_script_file(path: str | Path) -> bool:
    return Path(path).is_file() and is_torchscript(path)


def _script_meta() -> dict:
    return {"teacher_kind": "torchscript", "model_name": None, "config": {}}


def _imported_meta(maps: Any) -> dict:
    return {"teacher_kind": "imported", "model_name": None, "config": {"import": maps.summary()}}


@contextmanager
def _neither(path: str | Path) -> Iterator[None]:
    """Turn "not a plc-kd checkpoint" into the teacher's message, which names both kinds."""
    from pipeline.checkpoint import NotACheckpointError

    try:
        yield
    except NotACheckpointError as err:
        raise ValueError(
            f"teacher {path} is neither a plc-kd checkpoint nor a TorchScript file "
            f"({_first_line(err.reason)}); pass a checkpoint of `plc train-teacher`, a "
            "torch.jit.save export (docs/commands.md: TorchScript teachers) or the folder "
            "`plc import-teacher` writes."
        ) from err


def contract_problems(out: Any, size: tuple[int, int, int], num_classes: int) -> list[str]:
    """What is wrong with a script's output for a batch of ``size`` = (B, H, W) images.

    Args:
        out: what the script returned.
        size: the batch's (B, H, W).
        num_classes: C of the dataset store.

    Returns:
        One phrase per violated rule (empty when the output keeps the contract).
    """
    b, h, w = size
    if isinstance(out, Tensor):
        logits, feats = out, None
    elif isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out):
        logits, feats = out
    else:
        return [f"it returned {_describe(out)}, not a Tensor or a tuple (logits, features)"]
    problems = []
    want = (b, num_classes, h, w)
    if tuple(logits.shape) != want:
        problems.append(
            f"logits have shape {tuple(logits.shape)}, expected (B, C, H, W) = {want} (C the "
            "dataset store's classes, H × W its image size)"
        )
    problems += _values(logits, "logits")
    if feats is not None:
        if feats.ndim != 4 or feats.shape[0] != b:
            problems.append(
                f"features have shape {tuple(feats.shape)}, expected (B, F, H', W') with B = {b}"
            )
        problems += _values(feats, "features")
    return problems


def check_contract(teacher: ScriptedTeacher, images: Tensor, num_classes: int) -> bool:
    """Run ``teacher``'s script on one real batch and refuse it unless it keeps the contract.

    Args:
        teacher: the loaded script.
        images: (B, 3, H, W) float32 images in [0, 1], on the teacher's device.
        num_classes: C of the dataset store.

    Returns:
        True when the script returns features, False for logits only.

    Raises:
        ValueError: one message naming the file, every problem found and what to do.
    """
    b, _, h, w = images.shape
    what = f"TorchScript teacher {teacher.path}, run on {b} train image(s) {tuple(images.shape)}"
    try:
        with torch.inference_mode():
            out = teacher.script(images)
    except Exception as err:  # whatever the script raises is the user's to see, in one line
        raise ValueError(f"{what}, raised {_script_error(err)}; {CONTRACT}: {_HINT}.") from err
    problems = contract_problems(out, (b, h, w), num_classes)
    if problems:
        raise ValueError(f"{what}: {'; '.join(problems)}; {CONTRACT}: {_HINT}.")
    features = isinstance(out, tuple)
    logger.info("TorchScript teacher %s: contract kept (%s)", teacher.path,
                "logits and features" if features else "logits only")  # fmt: skip
    return features


def _values(x: Tensor, name: str) -> list[str]:
    if not x.is_floating_point():
        return [f"{name} have dtype {x.dtype}, expected a floating-point dtype"]
    bad = int((~torch.isfinite(x)).sum())
    return [f"{name} hold {bad} NaN or infinite value(s)"] if bad else []


def _describe(out: Any) -> str:
    if isinstance(out, tuple | list):
        kinds = ", ".join(type(t).__name__ for t in out)
        return f"a {type(out).__name__} of {len(out)} ({kinds})"
    return f"a {type(out).__name__}"


def _first_line(err: BaseException | str) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(err).__name__


def _script_error(err: Exception) -> str:
    """The error a script raised, in one line: TorchScript puts it last, after its own
    traceback of the script's source ("builtins.RuntimeError: ...")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    last = lines[-1].removeprefix("builtins.").rstrip(".")
    return last if ": " in last else f"{type(err).__name__}: {last}"
