"""Atomic, pickle-free checkpoints: ``checkpoint.safetensors`` + ``checkpoint.json``.

``checkpoint.safetensors`` holds, for every trained network ("arm") of a run, its parameters and
buffers (``model.<state-dict name>``) and its optimizer's state tensors
(``optim.<param index>.<key>``); the control twin's tensors carry the prefix ``control.``; the
input standardisation the networks were trained behind is ``preprocess.mean`` and
``preprocess.std`` (float64, described by the JSON entry ``"preprocess"``).
``checkpoint.json`` holds the architecture of each arm (``net.config()``, including the current
widths; for a user's own model, which no class name can rebuild, ``{"kind": "user"}`` with the
width of every hidden space by name and the names of the parameters in each optimizer group),
the optimizer's hyper-parameters and non-tensor state, the
:class:`~isoplastic.train.config.TrainConfig`, the epoch, the RNG states, the change log, the
metrics so far and the sha256 of the safetensors file, which is verified on load. A
language-model run adds ``"text"``: its character vocabulary (:class:`~isoplastic.text.Vocabulary`)
and the corpus's unigram figures.

Writing is atomic: both files are first written to temporary files in the same directory and
fsync'ed, then moved into place with :func:`os.replace` (tensors first, the JSON last: the JSON
is the commit point). A crash before the JSON is moved leaves the tensors of the new checkpoint
next to the previous JSON; the loader notices the hash mismatch and rolls forward to the
complete pending JSON (``checkpoint.json.tmp``) whose hash matches. Loading never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..core import optim_state as ostate
from ..core.change import Change
from ..core.model import hidden_spaces
from ..data import Standardisation
from ..errors import IsoplasticError, OptimizerStateError, UnsupportedOptimizerError
from ..nn import IsotropicMLP
from ..nn.conv import IsotropicCNN
from ..nn.grouped import GroupedIsotropicMLP
from ..nn.transformer import IsotropicTransformer
from ..text import Vocabulary
from .config import TrainConfig

CHECKPOINT_VERSION = 1
TENSORS = "checkpoint.safetensors"
META = "checkpoint.json"
PREPROCESS = "preprocess."


class CheckpointError(IsoplasticError, ValueError):
    """A checkpoint is missing, incomplete, tampered with or inconsistent."""


# -- atomic files ----------------------------------------------------------------------------

def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_tmp(path: Path, data: bytes) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, replace)."""
    path = Path(path)
    tmp = _write_tmp(path, data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# -- optimizer / RNG state ---------------------------------------------------------------------

def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str = "") -> tuple[dict, dict]:
    """(tensors, json-able) for the optimizer: its state tensors as ``<prefix>optim.<i>.<key>``
    and :func:`~isoplastic.core.optim_state.state_meta` (class, hyper-parameters, numbers)."""
    tensors = {f"{prefix}optim.{name}": t for name, t in ostate.state_tensors(optimizer).items()}
    return tensors, ostate.state_meta(optimizer)


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict, prefix: str = "") -> None:
    """Put saved state into ``optimizer`` (built over the same parameters, in the same order);
    all of it is validated first (:func:`~isoplastic.core.optim_state.load_state_tensors`)."""
    try:
        ostate.load_state_tensors(optimizer, tensors, meta, prefix=f"{prefix}optim.")
    except (OptimizerStateError, UnsupportedOptimizerError) as exc:
        raise CheckpointError(f"{exc}; the checkpoint is inconsistent") from exc


def rng_states() -> dict:
    """torch CPU, python ``random`` and numpy global RNG states as JSON-able values."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - saving the global legacy RNG on purpose
    return {
        "torch": torch.get_rng_state().tolist(),
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002


# -- checkpoint --------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    Attributes:
        config: the run's :class:`TrainConfig`.
        epoch: number of completed epochs.
        nets, optimizers: per arm (``"adaptive"``, optionally ``"control"``), rebuilt with the
            saved widths and state.
        meta: the whole JSON document (change log under ``"changes"``, metrics under
            ``"metrics"``, RNG states under ``"rng"``, free-form ``"extra"``).
        preprocess: the input :class:`~isoplastic.data.Standardisation` the networks were
            trained behind; ``None`` when they took their inputs as given; ``False`` for a
            checkpoint written before the statistics were saved.
    """

    config: TrainConfig
    epoch: int
    nets: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    meta: dict = field(default_factory=dict)
    preprocess: Standardisation | None | bool = False

    @property
    def vocab(self) -> Vocabulary | None:
        """The character vocabulary of a language-model run (``None`` for other runs)."""
        text = self.meta.get("text")
        return None if text is None else Vocabulary(text["vocab"])

    @property
    def changes(self) -> list[dict]:
        return self.meta.get("changes", [])

    @property
    def metrics(self) -> list[dict]:
        return self.meta.get("metrics", [])


def _prefix(arm: str) -> str:
    return "" if arm == "adaptive" else f"{arm}."


#: ``architecture["kind"]`` of a user's own model (rebuilt from a model the caller constructs).
USER_KIND = "user"


def is_library_model(net: nn.Module) -> bool:
    """Whether ``net`` is one of the library's networks, rebuilt from ``net.config()``
    (:class:`~isoplastic.IsotropicMLP`, :class:`~isoplastic.IsotropicCNN`,
    :class:`~isoplastic.IsotropicTransformer`)."""
    return isinstance(net, (IsotropicMLP, IsotropicCNN, IsotropicTransformer))


def is_chain_model(net: nn.Module) -> bool:
    """Whether ``net`` is one of the library's chain networks, whose ``widths`` list input,
    hidden and output widths (records list those; other models list their hidden spaces by
    name)."""
    return isinstance(net, (IsotropicMLP, IsotropicCNN))


def hidden_widths(net: nn.Module) -> list[int]:
    """The width of every hidden space, in :func:`~isoplastic.hidden_spaces` order (for a
    library network: ``net.widths[1:-1]``)."""
    return [space.size for space in hidden_spaces(net).values()]


def user_architecture(net: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """``checkpoint.json``'s description of a user's model: the class (informative), the width of
    every hidden space by name, and the parameter names of every optimizer group (so that the
    rebuilt optimizer holds the same parameters in the same groups and order).

    Raises :class:`CheckpointError` when the optimizer holds a tensor that is not a parameter
    of ``net``."""
    names = {id(p): n for n, p in net.named_parameters()}
    groups = []
    for j, group in enumerate(optimizer.param_groups):
        missing = [tuple(p.shape) for p in group["params"] if id(p) not in names]
        if missing:
            raise CheckpointError(
                f"parameter group {j} of the {type(optimizer).__name__} holds tensors of shapes "
                f"{missing} that are not parameters of the {type(net).__name__} model; build the "
                "optimizer over model.parameters() only")
        groups.append([names[id(p)] for p in group["params"]])
    return {"kind": USER_KIND, "class": type(net).__qualname__,
            "spaces": {name: space.size for name, space in hidden_spaces(net).items()},
            "param_names": groups}


def resize_to(net: nn.Module, widths: dict[str, int], what: str = "the model") -> None:
    """Resize every hidden space of ``net`` to ``widths`` (``{name: width}``), in one
    :class:`~isoplastic.core.Change`: zero coordinates appended, or the last ones removed. The
    values are placeholders, meant to be overwritten (``load_state_dict``).

    Raises :class:`CheckpointError` when ``net``'s hidden spaces are not exactly the names of
    ``widths``, in that order (another block layout)."""
    spaces = hidden_spaces(net)
    if list(spaces) != list(widths):
        raise CheckpointError(
            f"{what}: the {type(net).__name__} given has hidden spaces {list(spaces)}, but the "
            f"checkpoint was written for hidden spaces {list(widths)}; pass a freshly "
            "constructed model of the same class, with the same blocks in the same places")
    change = Change("resize to the checkpoint's widths")
    for name, space in spaces.items():
        n = int(widths[name]) - space.size
        if n > 0:
            change.insert(space, n)
        elif n < 0:
            change.remove(space, list(range(space.size + n, space.size)))
    if change.steps:
        change.apply()


def serialise_arms(nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                   extra_tensors: dict[str, torch.Tensor] | None = None,
                   user_info: dict | None = None) -> tuple[bytes, dict[str, dict]]:
    """(safetensors blob, per-arm JSON-able architecture + optimizer metadata) of the arms.

    Tensors are copied to the CPU; this is what :func:`save_checkpoint` writes and what a
    distributed run broadcasts from rank 0 (:mod:`isoplastic.train.distributed`).
    ``extra_tensors`` (e.g. the input standardisation) are stored under their own names. A user's
    own model is described by :func:`user_architecture`, with ``user_info`` (JSON-able, e.g.
    the input shape) added.
    """
    tensors: dict[str, torch.Tensor] = {k: v.detach().cpu().contiguous().clone()
                                        for k, v in (extra_tensors or {}).items()}
    arms: dict[str, dict] = {}
    for arm, net in nets.items():
        pre = _prefix(arm)
        for name, t in net.state_dict().items():
            tensors[f"{pre}model.{name}"] = t.detach().cpu().contiguous().clone()
        opt_tensors, opt_meta = optimizer_tensors(optimizers[arm], pre)
        tensors.update({k: v.cpu() for k, v in opt_tensors.items()})
        if is_library_model(net) or isinstance(net, GroupedIsotropicMLP):  # rebuilt from config
            arch = {"kind": net.kind, **net.config()}
        else:
            arch = {**user_architecture(net, optimizers[arm]), **(user_info or {})}
        arms[arm] = {"architecture": arch, "optimizer": opt_meta}
    return st_save(tensors, metadata={"format": "isoplastic-checkpoint"}), arms


def preprocess_entries(stats: Standardisation | None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON) of a run's input standardisation for the checkpoint.

    Tensors ``preprocess.mean`` and ``preprocess.std`` (float64); JSON ``{"standardise": bool,
    "input_shape": [...]}``. ``stats=None`` (a :class:`~isoplastic.train.Trainer` given data
    without a recorded standardisation) stores ``{"standardise": false}``: the model takes the
    inputs exactly as they were given to the trainer.
    """
    if stats is None:
        return {}, {"standardise": False}
    return ({f"{PREPROCESS}mean": stats.mean.to(torch.float64),
             f"{PREPROCESS}std": stats.std.to(torch.float64)},
            {"standardise": True, "input_shape": list(stats.input_shape)})


def preprocess_from(meta: dict, tensors: dict[str, torch.Tensor], source: object = "checkpoint"
                    ) -> Standardisation | None | bool:
    """The saved :class:`Standardisation`; ``None`` when the run was trained on inputs given as
    they are; ``False`` for a checkpoint written before the statistics were saved."""
    info = meta.get("preprocess")
    if info is None:
        return False
    if not info.get("standardise"):
        return None
    try:
        return Standardisation(tensors[f"{PREPROCESS}mean"], tensors[f"{PREPROCESS}std"],
                               tuple(int(s) for s in info["input_shape"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: the input standardisation is incomplete "
                              f"({type(exc).__name__}: {exc}); restore a copy of the run "
                              "directory") from exc


def save_checkpoint(run_dir: str | Path, config: TrainConfig, epoch: int,
                    nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    *, changes: list[dict] | None = None, metrics: list[dict] | None = None,
                    extra: dict | None = None,
                    preprocess: Standardisation | None | bool = False,
                    user_info: dict | None = None, text: dict | None = None) -> Path:
    """Write ``checkpoint.safetensors`` and ``checkpoint.json`` into ``run_dir`` atomically.

    ``text``: a language-model run's ``{"vocab": chars, ...}`` (the characters of tokens
    ``1..V-1``, :class:`~isoplastic.text.Vocabulary`), stored as the JSON entry ``"text"``.

    ``preprocess``: the input :class:`~isoplastic.data.Standardisation` the networks were
    trained behind (``None``: inputs used as given); ``False`` omits the entry, as checkpoints
    written before it existed did (then :func:`isoplastic.load` asks for ``recompute=True``).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pre_tensors, pre_meta = ({}, None) if preprocess is False else preprocess_entries(preprocess)
    blob, arms = serialise_arms(nets, optimizers, pre_tensors, user_info)
    meta = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "epoch": int(epoch),
        "arms": arms,
        "config": config.to_dict(),
        "rng": rng_states(),
        "changes": list(changes or []),
        "metrics": list(metrics or []),
        "extra": dict(extra or {}),
        **({} if pre_meta is None else {"preprocess": pre_meta}),
        **({} if text is None else {"text": dict(text)}),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "safetensors_bytes": len(blob),
    }
    meta["meta_sha256"] = meta_digest(meta)
    text = json.dumps(meta, indent=1)
    tensors_path, meta_path = run_dir / TENSORS, run_dir / META
    tmp_tensors = _write_tmp(tensors_path, blob)
    tmp_meta = _write_tmp(meta_path, text.encode())
    os.replace(tmp_tensors, tensors_path)
    os.replace(tmp_meta, meta_path)  # commit point
    _fsync_dir(run_dir)
    return meta_path


def meta_digest(meta: dict) -> str:
    """sha256 of the metadata itself (canonical JSON without the ``meta_sha256`` field), so that
    an edited ``checkpoint.json`` is detected, not only damaged tensors."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata ({exc}); the checkpoint is "
                              "damaged - start a new run or restore a copy") from exc
    if not isinstance(meta, dict) or "sha256" not in meta:
        raise CheckpointError(f"{path}: not an isoplastic checkpoint (no sha256 field)")
    return meta


def read_checkpoint_files(run_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) after verifying the sha256; rolls forward an interrupted save."""
    run_dir = Path(run_dir)
    meta_path, tensors_path = run_dir / META, run_dir / TENSORS
    if not meta_path.is_file() or not tensors_path.is_file():
        raise CheckpointError(f"{run_dir}: no checkpoint ({META} and {TENSORS}) found; pass the "
                              "directory of a run that has completed at least one epoch")
    blob = tensors_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    meta = _read_meta(meta_path)
    if meta["sha256"] != digest:
        pending = meta_path.with_name(META + ".tmp")
        if pending.is_file():
            try:
                newer = _read_meta(pending)
            except CheckpointError:
                newer = None
            if newer is not None and newer["sha256"] == digest:
                os.replace(pending, meta_path)  # finish the interrupted save
                meta = newer
        if meta["sha256"] != digest:
            raise CheckpointError(
                f"{tensors_path}: sha256 {digest[:16]}... does not match the {meta['sha256'][:16]}"
                f"... recorded in {META} ({len(blob)} bytes, expected "
                f"{meta.get('safetensors_bytes')}); the tensors were truncated or tampered with - "
                "refusing to load them")
    if "meta_sha256" in meta and meta["meta_sha256"] != meta_digest(meta):
        raise CheckpointError(
            f"{meta_path}: the metadata does not match its recorded sha256; the file was edited "
            "or damaged - refusing to load it (restore a copy of the run directory)")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError) as exc:  # pragma: no cover - hash already matched
        raise CheckpointError(f"{tensors_path}: unreadable safetensors file ({exc})") from exc
    return meta, tensors


def build_net(
    architecture: dict,
) -> IsotropicMLP | IsotropicCNN | IsotropicTransformer | GroupedIsotropicMLP:
    """An :class:`IsotropicMLP`, :class:`IsotropicCNN`, :class:`IsotropicTransformer` or
    :class:`GroupedIsotropicMLP` from ``{"kind": net.kind, **net.config()}``."""
    arch = dict(architecture)
    kind = arch.pop("kind", "mlp")
    if kind == "cnn":
        return IsotropicCNN(**arch)
    if kind == "transformer":
        return IsotropicTransformer(**arch)
    if kind == "grouped":
        return GroupedIsotropicMLP(**arch)
    if kind != "mlp":
        raise CheckpointError(f"checkpoint architecture kind {kind!r} is not supported "
                              "(known: 'mlp', 'cnn', 'transformer', 'grouped')")
    return IsotropicMLP(**arch)


#: ``TrainConfig.optimizer`` name -> ``torch.optim`` class (every one transports its state
#: through the structural changes; see :data:`isoplastic.core.optim_state.SUPPORTED_OPTIMIZERS`).
OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam, "adadelta": torch.optim.Adadelta,
}


#: Optimizers with a fused kernel in torch (one call updates every parameter).
FUSED_OPTIMIZERS = ("adamw", "adam", "sgd", "adagrad")


def make_optimizer(net: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over all parameters, with the config's lr and weight decay
    (and ``momentum`` for SGD and RMSprop).

    Adam, AdamW, SGD and Adagrad use torch's fused kernel (``fused=True``) when every parameter
    is a floating-point tensor on the CPU or a CUDA device: on the CPU it makes the isotropic
    MLP's AdamW step 1.4-1.9x faster than torch's default per-tensor loop (`isoplastic bench`, 1b),
    where the multi-tensor ``foreach`` form measured no faster. Elsewhere, or where this torch
    has no such kernel, torch's default implementation. The choice is part of the optimizer's
    parameter groups, so a checkpoint resumes with the implementation it was trained with."""
    try:
        cls = OPTIMIZER_CLASSES[config.optimizer]
    except KeyError:
        raise CheckpointError(f"optimizer {config.optimizer!r} is not one of "
                              f"{', '.join(OPTIMIZER_CLASSES)}") from None
    kwargs: dict = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer in ("sgd", "rmsprop"):
        kwargs["momentum"] = config.momentum
    params = list(net.parameters())
    if config.optimizer in FUSED_OPTIMIZERS and params and all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a torch without this fused kernel for the device
            pass
    return cls(params, **kwargs)


def user_models(arms: dict[str, dict], model: nn.Module | None, source: object = "checkpoint"
                ) -> dict[str, nn.Module]:
    """The fresh model of every arm that holds a user's own model: ``model`` itself for the
    adaptive arm (or the first such arm), independent deep copies of it, taken before anything is
    resized, for the others. Raises :class:`CheckpointError` when such an arm exists and
    ``model`` is ``None``."""
    import copy

    user = [arm for arm, info in arms.items()
            if info.get("architecture", {}).get("kind") == USER_KIND]
    if not user:
        if model is not None:
            raise CheckpointError(
                f"{source}: this run trained the library's network, which is rebuilt from the "
                "checkpoint; model= is only for runs that trained your own model - drop it")
        return {}
    if model is None:
        cls = arms[user[0]]["architecture"].get("class", "your model class")
        raise CheckpointError(
            f"{source}: this run trained your own model ({cls}), whose architecture cannot be "
            "rebuilt from the checkpoint; pass a freshly constructed one, e.g. "
            f"Trainer.from_checkpoint(run_dir, model={cls}(...)) or "
            f"isoplastic.load(run_dir, model={cls}(...)); its hidden spaces are resized to the "
            "saved widths and its tensors loaded")
    first = "adaptive" if "adaptive" in user else user[0]
    copies = {arm: copy.deepcopy(model) for arm in user if arm != first}
    return {first: model, **copies}


def rebuild_arms(arms: dict[str, dict], tensors: dict[str, torch.Tensor], config: TrainConfig,
                 source: object = "checkpoint", models: dict[str, nn.Module] | None = None
                 ) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer]]:
    """Networks (saved widths) and optimizers (saved state) from :func:`serialise_arms` output.

    A library network is rebuilt from its architecture; an arm holding a user's own model takes
    the fresh model ``models[arm]`` (see :func:`user_models`), cast to the run's dtype, its hidden
    spaces resized to the saved widths (:func:`resize_to`), and its state loaded."""
    dtype = getattr(torch, config.dtype)
    nets: dict[str, nn.Module] = {}
    optimizers: dict[str, torch.optim.Optimizer] = {}
    for arm, info in arms.items():
        pre = _prefix(arm)
        arch = info["architecture"]
        if arch.get("kind") == USER_KIND:
            if not models or arm not in models:
                raise CheckpointError(f"{source}: arm {arm!r} holds a user's own model; pass a "
                                      "freshly constructed one (model=...)")
            net = models[arm].to(dtype)
            resize_to(net, {str(k): int(v) for k, v in arch["spaces"].items()},
                      f"{source}, arm {arm!r}")
        else:
            net = build_net(arch).to(dtype)
        lead = f"{pre}model."
        state = {k[len(lead):]: v for k, v in tensors.items() if k.startswith(lead)}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            hint = ""
            if arch.get("kind") == USER_KIND:
                hint = (f"; the model given ({type(net).__name__}) differs from the one trained "
                        f"({arch.get('class')}) beyond its hidden widths - construct it exactly "
                        "as for the run")
            raise CheckpointError(f"{source}: model tensors of {arm!r} do not fit the saved "
                                  f"architecture ({exc}){hint}") from exc
        params: list[torch.Tensor] | list[list[torch.Tensor]] = list(net.parameters())
        if arch.get("kind") == USER_KIND:
            named = dict(net.named_parameters())
            missing = [n for g in arch["param_names"] for n in g if n not in named]
            if missing:
                raise CheckpointError(f"{source}: the optimizer of {arm!r} held parameters "
                                      f"{missing} that the model given does not have")
            params = [[named[n] for n in g] for g in arch["param_names"]]
        try:  # the class and hyper-parameters that were saved, whichever the run used
            opt = ostate.optimizer_from_meta(params, info["optimizer"])
        except (OptimizerStateError, UnsupportedOptimizerError) as exc:
            raise CheckpointError(f"{source}: optimizer of {arm!r}: {exc}") from exc
        load_optimizer_state(opt, tensors, info["optimizer"], pre)
        nets[arm], optimizers[arm] = net, opt
    return nets, optimizers


def checkpoint_from(meta: dict, tensors: dict[str, torch.Tensor],
                    source: object = "checkpoint", model: nn.Module | None = None) -> Checkpoint:
    """A :class:`Checkpoint` from already verified (metadata, tensors).

    ``model``: a freshly constructed model, needed when the run trained a user's own model
    (see :func:`user_models`). Any inconsistency between the metadata and the tensors is a
    :class:`CheckpointError`.
    """
    try:
        config = TrainConfig.from_dict(meta["config"])
        models = user_models(meta["arms"], model, source)
        nets, optimizers = rebuild_arms(meta["arms"], tensors, config, source, models)
        epoch = int(meta["epoch"])
        if not isinstance(meta.get("rng"), dict):
            raise ValueError("the RNG states are missing")
        preprocess = preprocess_from(meta, tensors, source)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: inconsistent checkpoint metadata "
                              f"({type(exc).__name__}: {exc}); restore a copy of the run "
                              "directory") from exc
    return Checkpoint(config=config, epoch=epoch, nets=nets, optimizers=optimizers, meta=meta,
                      preprocess=preprocess)


def load_checkpoint(run_dir: str | Path, *, model: nn.Module | None = None) -> Checkpoint:
    """Rebuild the networks (saved widths) and optimizers (saved state) of a run directory.

    A run that trained a user's own model needs ``model``, a freshly constructed instance of it:
    it becomes the adaptive arm (resized to the saved widths, state loaded; other arms get deep
    copies taken first). Without it such a checkpoint is refused with a
    :class:`CheckpointError` that says so.
    """
    meta, tensors = read_checkpoint_files(run_dir)
    return checkpoint_from(meta, tensors, run_dir, model)
