"""Adaptive-topology training: the scaffold policy of the paper, with a fixed-topology control.

Epochs are numbered from 1 everywhere (``metrics.jsonl``, ``changes.jsonl``, the checkpoint's
completed-epoch count, ``inspect``, the report and the console): the record of epoch ``e`` holds
the metrics after ``e`` epochs, and a change logged at epoch ``e`` was made after the training
pass of epoch ``e``, before its evaluation.

Each epoch: one pass over the shuffled training set (cross-entropy + the ψ penalty of every
isoplastic block, :func:`psi_penalty`; AdamW by default), then the topology policy (after the
training epoch, before evaluation), then evaluation on the test set. Every individual
structural change is measured on a fixed held-out probe batch
(:func:`isoplastic.function_change`) and logged with the widths after it and its wall time; with a
``tolerance`` a change whose ``eps_scaled`` exceeds it is rolled back (model and optimizer
exactly) and logged as refused. With ``control=True`` a fixed-topology twin starts from the same
initial weights and sees the same batches.

The network is the configured :class:`~isoplastic.IsotropicMLP` or
:class:`~isoplastic.IsotropicCNN`, or the user's own ``nn.Module`` holding isoplastic blocks
(``Trainer(config, model=..., optimizer=...)``). Everything recorded goes through the model
contract: widths and spectra per hidden space in :func:`~isoplastic.hidden_spaces` order,
change records with the space's name.

Determinism: the shuffle order of epoch ``e`` comes from a generator seeded with ``(seed, e)``,
the outgoing weights of neurons grown after epoch ``e`` from another generator seeded with
``(seed, e)``; so a run resumed from the checkpoint at the end of epoch ``e`` is bit-identical
to an uninterrupted one.

Several processes (``torchrun``; :mod:`isoplastic.train.distributed`, ``docs/distributed.md``):
pass a :class:`~isoplastic.train.distributed.DistContext`. ``batch_size`` stays the *global*
batch: every rank draws the same permutation and takes its chunk of each global batch, and
DistributedDataParallel averages gradients scaled so that they equal the single-process mean.
Structural changes run on rank 0 alone and are broadcast (architecture, parameters, optimizer
state, change log); every rank then re-wraps the resized network in a fresh DDP and the ranks'
states are compared by an all-gathered sha256. Only rank 0 writes files or shows progress. A
single-process run takes exactly the code path it always took.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core import optim_state as ostate
from ..core.model import blocks, hidden_spaces, require_blocks
from ..core.optim_state import move_state
from ..data import DataError, Dataset, load_dataset
from ..errors import IsoplasticError
from ..nn import GroupedIsotropicMLP, IsotropicMLP
from ..nn.chain import AffineChain
from ..nn.conv import IsotropicCNN
from ..nn.transformer import IsotropicTransformer
from ..ops.diagonalise import singular_values
from ..text import TextData, load_text
from ..topology.policies import (
    AbstractPolicy,
    ChangeRefused,
    FixedTopology,
    ScaffoldPolicy,
    WidthSchedule,
)
from ..topology.record import StructuralChange
from ..verify import compare_logits
from .checkpoint import (
    CheckpointError,
    atomic_write,
    checkpoint_from,
    hidden_widths,
    is_chain_model,
    is_library_model,
    load_checkpoint,
    make_optimizer,
    read_checkpoint_files,
    rebuild_arms,
    save_checkpoint,
    serialise_arms,
    set_rng_states,
)
from .config import ConfigError, TrainConfig
from .distributed import DistContext, DistributedError, state_digest
from .lm import eval_windows, evaluate_text, random_starts, sequence_loss, token_logits, windows


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from ``seed`` and ``parts`` (e.g. ``(seed, "shuffle", epoch)``)."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *parts))


class RunDirError(IsoplasticError, ValueError):
    """A run directory would be overwritten; the message names the files and the choices."""


#: Files a training run writes into its directory (an existing one marks a run).
RUN_FILES = ("config.json", "metrics.jsonl", "changes.jsonl", "checkpoint.safetensors",
             "checkpoint.json", "report.md", "accuracy_loss.png", "widths.png", "spectra.png",
             "function_change.png", "metrics.csv", "tensorboard")


def existing_run_files(run_dir: str | Path) -> list[str]:
    """The files of :data:`RUN_FILES` (and their ``.tmp`` leftovers) present in ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return [n for name in RUN_FILES for n in (name, name + ".tmp") if (run_dir / n).exists()]


def check_run_dir(run_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse (:class:`RunDirError`) a directory holding a run's files unless ``overwrite``.

    With ``overwrite`` nothing is deleted here; the new run replaces those files as it writes
    them, and :meth:`Trainer.run` removes the old run's other files when it starts.
    """
    found = existing_run_files(run_dir)
    if found and not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(found[:4])}"
            f"{', ...' if len(found) > 4 else ''}); continue it with `isoplastic train --resume "
            f"{run_dir}`, choose another --out, or pass --overwrite to replace it")


def check_splits(data: Dataset) -> None:
    """Raise :class:`DataError` when the training or test split is empty."""
    n_train, n_test = int(data.x_train.shape[0]), int(data.x_test.shape[0])
    if n_train == 0 or n_test == 0:
        counts = data.y_train.bincount(minlength=data.n_classes).tolist() if n_train else []
        raise DataError(
            f"{data.name}: {n_train} training and {n_test} test samples; the automatic "
            "stratified 80/20 split puts round(0.2 * n) samples of a class with n samples into "
            f"the test set (training samples per class: {counts}), so it needs at least 3 "
            "samples of some class; give more data, or save your own split as x_test and y_test "
            "in the .npz (and check --n-train/--n-test)")


def prepare_text(config: TrainConfig) -> TextData:
    """The configured text (:func:`isoplastic.text.load_text`), cut to ``n_train`` / ``n_test``
    characters if given; :class:`~isoplastic.data.DataError` when a split is shorter than one
    window of ``context_length + 1`` characters."""
    data = load_text(config.dataset)
    if config.n_train is not None or config.n_test is not None:
        data = data.truncated(config.n_train, config.n_test)
    data.check_context(config.context_length)
    return data


def prepare_data(config: TrainConfig) -> Dataset | TextData:
    """Load, optionally subset, flatten (MLP) and standardise the configured data set; for
    ``model="transformer"`` the text of :func:`prepare_text`.

    The returned :class:`~isoplastic.data.Dataset` carries its ``standardisation`` (training-set
    mean and std, and the raw sample shape), which the trainer saves in the checkpoint so that
    :func:`isoplastic.load` can apply it to new data in the data set's own units. Raises
    :class:`~isoplastic.data.DataError` when a split would be empty.
    """
    if config.model == "transformer":
        return prepare_text(config)
    data = load_dataset(config.dataset, config.data_dir, seed=config.seed)
    if config.n_train is not None or config.n_test is not None:
        data = data.subset(config.n_train, config.n_test, seed=config.seed)
    check_splits(data)
    if config.model == "cnn":
        if len(data.sample_shape) != 3:
            raise ConfigError(f"model='cnn' needs image data (C, H, W); {config.dataset!r} has "
                              f"samples of shape {data.sample_shape}; use model='mlp'")
        return data.standardised()
    return data.flat().standardised(input_shape=data.sample_shape)


def resolve_device(device: str | torch.device | None, dist: DistContext) -> torch.device:
    """The training device: ``device`` (single process; default CPU; ``"auto"``: CUDA, else MPS,
    else the CPU) or the process group's.

    Raises :class:`~isoplastic.train.config.ConfigError` for a device that does not exist here,
    or one that contradicts a multi-process run's device.
    """
    if dist.enabled:
        if device is not None and torch.device(device).type != dist.device.type:
            raise ConfigError(f"device {str(device)!r}: under torchrun the {dist.backend} backend "
                              f"trains on {dist.device}; set ISOPLASTIC_DIST_BACKEND=nccl for "
                              "CUDA or gloo for the CPU instead of --device")
        return dist.device
    if device is None:
        return torch.device("cpu")
    if device == "auto":  # the first accelerator present, else the CPU
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {str(device)!r} is not a torch device ({exc}); e.g. cpu, "
                          "cuda, cuda:1, mps") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r}: CUDA is not available in this PyTorch "
                              f"build ({torch.__version__}); use --device cpu or install a CUDA "
                              "build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA "
                              "device(s) are visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {str(device)!r}: supported device types are cpu, cuda, mps")
    return dev


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) for the duration of the block, then raise it.

    Saving a run writes several files through temporary files; an interrupt in between would
    leave ``*.tmp`` files behind. Only the main thread can install signal handlers; elsewhere
    this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[object] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def build_model(config: TrainConfig, data: Dataset | TextData
                ) -> IsotropicMLP | IsotropicCNN | IsotropicTransformer:
    """The configured network for ``data``, initialised from ``(seed, "init")``."""
    gen = generator(config.seed, "init")
    if config.model == "transformer":
        if not isinstance(data, TextData):
            raise ConfigError("model='transformer' trains on text; pass a TextData "
                              "(isoplastic.text.load_text) or a text dataset name or file")
        return IsotropicTransformer(data.vocab_size, config.d_model, config.n_layers,
                                    config.n_heads, config.d_ff, config.context_length,
                                    intrinsic_length=config.intrinsic_length, psi=config.psi,
                                    generator=gen)
    if isinstance(data, TextData):
        raise ConfigError(f"model={config.model!r} classifies samples; text data needs "
                          "model='transformer'")
    if config.model == "cnn":
        return IsotropicCNN(data.sample_shape, config.channels, config.kernel_size,
                            head=config.widths, n_classes=data.n_classes,
                            intrinsic_length=config.intrinsic_length, psi=config.psi,
                            padding="same", pooling="mean", generator=gen)
    widths = [data.n_features, *config.widths, data.n_classes]
    if config.group_size is not None:
        groups = [w // config.group_size for w in config.widths]
        return GroupedIsotropicMLP(widths, groups, intrinsic_length=config.intrinsic_length,
                                   psi=config.psi, generator=gen)
    return IsotropicMLP(widths, intrinsic_length=config.intrinsic_length, psi=config.psi,
                        generator=gen)


@torch.no_grad()
def logits_of(net: torch.nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """Evaluation-mode logits (the training flag is restored)."""
    was = net.training
    net.eval()
    try:
        return torch.cat([net(x[i:i + batch]) for i in range(0, x.shape[0], batch)])
    finally:
        net.train(was)


def named_spectra(net: nn.Module) -> dict[str, list[float]]:
    """Neuron strengths (singular values of the incoming weight) of every hidden space, by its
    :func:`~isoplastic.hidden_spaces` name."""
    return {name: singular_values(net, name).tolist() for name in hidden_spaces(net)}


def spectra(net: nn.Module) -> list[list[float]]:
    """Neuron strengths of every hidden space, in :func:`~isoplastic.hidden_spaces` order (for a
    library network: hidden layer ``0, 1, ...``)."""
    return list(named_spectra(net).values())


def psi_penalty(net: nn.Module) -> torch.Tensor | None:
    """Sum of ``psi_penalty()`` over every affine-chain block of ``net`` (the MLP and CNN
    blocks; ``λ Σ‖ψ‖²`` for ``psi="trainable+decay"``, else 0); ``None`` when ``net`` holds
    none. For a bare block this is exactly ``net.psi_penalty()``."""
    total: torch.Tensor | None = None
    for block in blocks(net).values():
        if isinstance(block, AffineChain):
            pen = block.psi_penalty()
            total = pen if total is None else total + pen
    return total


def _with_penalty(loss: torch.Tensor, net: nn.Module) -> torch.Tensor:
    pen = psi_penalty(net)
    return loss if pen is None else loss + pen


def psi_norm(net: nn.Module) -> float | None:
    """``Σ‖ψ‖`` over every ψ vector of every affine-chain block; ``None`` when there are none."""
    psis = [p for block in blocks(net).values() if isinstance(block, AffineChain)
            and block.psi_mode.has_vectors for p in block.psi]
    return float(sum(p.detach().norm() for p in psis)) if psis else None


def record_widths(net: nn.Module) -> list[int]:
    """The widths a change record lists: a library network's ``widths`` (input, hidden...,
    output, as before), otherwise every hidden space's width (:func:`hidden_widths`)."""
    return list(net.widths) if is_chain_model(net) else hidden_widths(net)


@dataclass
class Arm:
    """One trained network: the adaptive one or its fixed-topology control."""

    name: str
    net: nn.Module
    optimizer: torch.optim.Optimizer
    policy: AbstractPolicy


@dataclass
class RunResult:
    """What :func:`fit` returns.

    Attributes:
        config: the run's configuration.
        metrics: one dict per epoch (see :meth:`Trainer.run_epoch`).
        changes: one dict per structural change (applied or refused).
        nets: the final networks per arm (``"adaptive"``, optionally ``"control"``).
        run_dir: the output directory (``None`` when nothing was written).
        wall_time: seconds spent in this call.
    """

    config: TrainConfig
    metrics: list[dict]
    changes: list[dict]
    nets: dict[str, nn.Module]
    run_dir: Path | None = None
    wall_time: float = 0.0
    report: Path | None = None

    def summary(self) -> dict:
        """Final accuracies, growth/shrink counts and the largest neurogenesis ``eps_scaled``."""
        last = self.metrics[-1] if self.metrics else {}
        applied = [c for c in self.changes if not c["refused"]]
        grow = [c for c in applied if c["op"] == "neurogenesis"]
        shrink = [c for c in applied if c["op"] == "neurodegeneration"]
        return {
            "epochs": len(self.metrics),
            "final_accuracy": last.get("test_accuracy"),
            "final_bpc": last.get("test_bpc"),
            "control_bpc": last.get("control", {}).get("test_bpc"),
            "unigram_bpc": last.get("unigram_bpc"),
            "control_accuracy": last.get("control", {}).get("test_accuracy"),
            "final_widths": last.get("widths"),
            "control_widths": last.get("control", {}).get("widths"),
            "n_growth": len(grow),
            "n_shrink": len(shrink),
            "neurons_added": sum(c["n"] for c in grow),
            "neurons_removed": sum(c["n"] for c in shrink),
            "n_refused": sum(1 for c in self.changes if c["refused"]),
            "max_eps_neurogenesis": max((c["eps_scaled"] for c in grow), default=None),
            "max_eps_neurodegeneration": max((c["eps_scaled"] for c in shrink), default=None),
        }


def user_model_ddp_message() -> str:
    return ("training your own model under torchrun is not supported yet: after each adaptation "
            "rank 0 broadcasts the arms and the other ranks rebuild them from their "
            "architecture, which only the library's networks (config.model 'mlp', 'cnn' or "
            "'transformer') "
            "can be rebuilt from; train your model in a single process, or use the configured "
            "network under torchrun")


def check_user_model(model: object, optimizer: torch.optim.Optimizer | None) -> None:
    """Refuse a ``model`` without isoplastic blocks, or an ``optimizer`` isoplastic cannot
    transport or that holds tensors that are not parameters of ``model`` (typed errors naming
    the fix)."""
    require_blocks(model, "Trainer(model=...)")
    if optimizer is None:
        return
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"Trainer: optimizer= must be a torch.optim.Optimizer over "
                          f"model.parameters(); got {type(optimizer).__name__}")
    if type(optimizer) not in ostate.SUPPORTED_OPTIMIZERS:
        names = ", ".join(c.__name__ for c in ostate.SUPPORTED_OPTIMIZERS)
        raise ConfigError(f"Trainer: the optimizer's state must move with every structural "
                          f"change and be checkpointed, which isoplastic supports for {names}; "
                          f"got {type(optimizer).__name__} (isoplastic.register_optimizer adds "
                          "a class)")
    own = {id(p) for p in model.parameters()}  # type: ignore[union-attr]
    stray = [tuple(p.shape) for g in optimizer.param_groups for p in g["params"]
             if id(p) not in own]
    if stray:
        raise ConfigError(f"Trainer: the optimizer holds {len(stray)} tensor(s) (shapes "
                          f"{stray[:4]}) that are not parameters of the model; build it over "
                          "model.parameters()")


def make_policy(config: TrainConfig) -> AbstractPolicy:
    if config.adapt == "scaffold":
        return ScaffoldPolicy(config.scaffold, config.threshold, init_scale=config.init_scale)
    if config.adapt == "schedule":
        return WidthSchedule(targets=config.schedule_targets(), init_scale=config.init_scale)
    return FixedTopology()


class Trainer:
    """Adaptive training with an optional fixed-topology control, usable step by step.

    Args:
        config: the run configuration.
        model: your own ``nn.Module`` holding isoplastic blocks (default: the network
            ``config`` describes, :func:`build_model`). It is trained in place, cast to
            ``config.dtype``; ``config.model`` then only says how the data are prepared
            (``"mlp"``: flattened; ``"cnn"``: images), and the blocks keep their own ψ modes and
            intrinsic lengths. The control arm is a deep copy of it (with a deep copy of
            ``optimizer``). Checkpoints hold its tensors and the width of every hidden space;
            resume with ``Trainer.from_checkpoint(run_dir, model=<a fresh instance>)``. Not
            supported under ``torchrun`` yet (:class:`~isoplastic.train.ConfigError`).
        optimizer: the optimizer of ``model`` (only with ``model``; default:
            :func:`~isoplastic.train.checkpoint.make_optimizer` of ``config`` over
            ``model.parameters()``). Its class must be one whose state isoplastic transports
            (:data:`isoplastic.core.optim_state.SUPPORTED_OPTIMIZERS`) and it may hold only
            parameters of ``model``.
        data: an already prepared (flat, standardised) :class:`~isoplastic.data.Dataset`;
            default: :func:`prepare_data` of ``config``. Its ``standardisation`` (if any) is
            saved with the checkpoint; without one, :func:`isoplastic.load` returns a model
            that takes inputs exactly as they are in ``data``.
        progress: show a tqdm bar per epoch (default: when stderr is a terminal; no bar
            when tqdm, which the ``cli`` extra installs, is absent).
        out: run directory (default ``config.out``); ``None``: nothing is written.
        dist: the process's place in a multi-process run (default: single process); only
            rank 0 writes files and shows progress.
        device: device of a single-process run (default ``"cpu"``); under ``torchrun`` the
            device follows the backend (``cuda:LOCAL_RANK`` with nccl).
        overwrite: a new run may replace the files of a run already in ``out`` (default:
            :class:`RunDirError`, raised before anything is written).
        callbacks: objects with any of the methods ``on_epoch_end(trainer, record)`` (after
            each epoch's metrics record is saved) and ``on_change(trainer, record)`` (after
            each structural change is measured, applied or refused).

    Example:
        >>> t = Trainer(TrainConfig(epochs=2, widths=[16], n_train=200, control=False), progress=False)
        >>> result = t.run()                                   # doctest: +SKIP
        >>> t = Trainer(TrainConfig(epochs=5), model=my_model, optimizer=my_opt)  # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, *, model: nn.Module | None = None,
                 optimizer: torch.optim.Optimizer | None = None, data: Dataset | None = None,
                 progress: bool | None = None, out: str | Path | None = None,
                 dist: DistContext | None = None, device: str | torch.device | None = None,
                 overwrite: bool = False, callbacks: Sequence[object] = (),
                 _arms: dict[str, tuple[nn.Module, torch.optim.Optimizer]] | None = None,
                 _preprocess: object = False) -> None:
        self.config = config
        self.dist = dist if dist is not None else DistContext()
        self.device = resolve_device(device, self.dist)
        self.dtype = getattr(torch, config.dtype)
        self.callbacks = list(callbacks)
        if optimizer is not None and model is None:
            raise ConfigError("Trainer: optimizer= is the optimizer of your own model; pass "
                              "model= too (the configured network gets its optimizer from "
                              "config.optimizer)")
        if model is not None:
            check_user_model(model, optimizer)
        if self.dist.enabled and (model is not None or any(
                not is_library_model(net) for net, _ in (_arms or {}).values())):
            raise ConfigError(user_model_ddp_message())
        out = config.out if out is None else out
        self.run_dir = None if out is None else Path(out)
        if _arms is None and self.run_dir is not None and self.dist.is_main:
            check_run_dir(self.run_dir, overwrite)  # before any work, before anything is written
        self.data = data if data is not None else prepare_data(config)
        #: the text of a language-model run (``None`` for classification)
        self.text: TextData | None = self.data if isinstance(self.data, TextData) else None
        if self.text is not None:
            if config.model != "transformer":
                raise ConfigError(f"Trainer: text data trains model='transformer', not "
                                  f"{config.model!r}")
            self.text.check_context(config.context_length)
            self.preprocess = None
            # training tokens (N,), no labels: the targets are the next characters
            self.x_train = self.text.train
            self.y_train = self.text.train.new_empty(0)
            # held-out windows (M, T) and their targets
            self.x_test, self.y_test = eval_windows(self.text.test, config.context_length)
        else:
            if config.model == "transformer":
                raise ConfigError("Trainer: model='transformer' trains on text; pass a TextData "
                                  "(isoplastic.text.load_text) as data=, or none")
            check_splits(self.data)
            #: the input standardisation saved with the checkpoint (see :func:`isoplastic.load`)
            self.preprocess = self.data.standardisation if _preprocess is False else _preprocess
            self.x_train = self.data.x_train.to(self.dtype)
            self.y_train = self.data.y_train
            self.x_test = self.data.x_test.to(self.dtype)
            self.y_test = self.data.y_test
        self.probe = self.x_test[: config.probe_size]
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.progress = self.progress and self.dist.is_main
        self.epoch = 0  # completed epochs
        self._fresh = _arms is None  # a new run (not continued from a checkpoint)
        self.metrics: list[dict] = []
        self.changes: list[dict] = []
        self.arms: dict[str, Arm] = {}
        if _arms is None and model is not None:
            model.to(self.dtype)  # in place: the optimizer keeps its parameters
            opt = optimizer if optimizer is not None else make_optimizer(model, config)
            _arms = {"adaptive": (model, opt)}
            if config.control:
                # one deepcopy of both: the twin optimizer holds the twin's parameters in the same
                # groups, with the same hyper-parameters (and any state, copied)
                _arms["control"] = copy.deepcopy((model, opt))
        elif _arms is None:
            net = build_model(config, self.data).to(self.dtype)
            _arms = {"adaptive": (net, make_optimizer(net, config))}
            if config.control:
                twin = copy.deepcopy(net)
                _arms["control"] = (twin, make_optimizer(twin, config))
        for name, (net, opt) in _arms.items():
            policy = make_policy(config) if name == "adaptive" else FixedTopology()
            self.arms[name] = Arm(name, net, opt, policy)
        if not self.dist.enabled and self.device.type != "cpu":
            for arm in self.arms.values():
                arm.net.to(self.device)
                move_state(arm.optimizer, self.device)
            for attr in ("x_train", "y_train", "x_test", "y_test", "probe"):
                setattr(self, attr, getattr(self, attr).to(self.device))
        self._models: dict[str, torch.nn.Module] = {n: a.net for n, a in self.arms.items()}
        if self.dist.enabled:
            if self.device.type != "cpu":
                for attr in ("x_train", "y_train", "x_test", "y_test", "probe"):
                    setattr(self, attr, getattr(self, attr).to(self.device))
            # rank 0's arms are the reference: broadcast them, wrap every arm in DDP, verify
            self._sync_arms(list(self.arms))
            self._verify("start of the run")

    # -- construction from a checkpoint -------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, run_dir: str | Path, *, model: nn.Module | None = None,
                        data: Dataset | None = None,
                        progress: bool | None = None, epochs: int | None = None,
                        dist: DistContext | None = None, device: str | torch.device | None = None,
                        callbacks: Sequence[object] = ()) -> Trainer:
        """Continue the run saved in ``run_dir`` (optionally with a new total of ``epochs``).

        ``epochs`` is the run's new *total* number of epochs (as in the configuration), not a
        number of further epochs; it may not be below the epochs already completed.

        A run that trained your own model needs ``model``: a freshly constructed instance of
        the same class and block layout. Its hidden spaces are resized to the saved widths, its
        parameters, buffers and the optimizer state are loaded (the optimizer is rebuilt with
        the saved class, groups and hyper-parameters: ``trainer.optimizer``), and it becomes the
        adaptive arm; another layout is refused (:class:`~isoplastic.train.CheckpointError`).

        In a multi-process run only rank 0 reads ``run_dir`` and broadcasts the verified
        checkpoint (no shared file system needed); the number of processes may differ from the
        run that wrote it.
        """
        if dist is not None and dist.enabled:
            if model is not None:
                raise ConfigError(user_model_ddp_message())
            ckpt = _broadcast_checkpoint(run_dir, dist)
        else:
            ckpt = load_checkpoint(run_dir, model=model)
        config = ckpt.config
        if epochs is not None:
            if int(epochs) < ckpt.epoch:
                raise ConfigError(f"epochs={epochs} is below the {ckpt.epoch} epochs {run_dir} has "
                                  "already completed; epochs is the run's total, e.g. "
                                  f"{ckpt.epoch + int(epochs)} for {epochs} more")
            config.epochs = int(epochs)
            config.validate()
        config.out = str(run_dir)
        arms = {name: (ckpt.nets[name], ckpt.optimizers[name]) for name in ckpt.nets}
        trainer = cls(config, data=data, progress=progress, out=run_dir, dist=dist,
                      device=device, callbacks=callbacks, _arms=arms, _preprocess=ckpt.preprocess)
        saved_vocab = ckpt.vocab
        if saved_vocab is not None and (trainer.text is None
                                        or trainer.text.vocab != saved_vocab):
            raise CheckpointError(
                f"{run_dir}: the run was trained on {ckpt.meta['text'].get('name')!r} with a "
                f"vocabulary of {len(saved_vocab)} tokens, but the text loaded now gives "
                f"{'no text' if trainer.text is None else len(trainer.text.vocab)} (another "
                "file, or another Python version's stdlib corpus); resume with the same text")
        trainer.epoch = ckpt.epoch
        trainer.metrics = list(ckpt.metrics)
        trainer.changes = list(ckpt.changes)
        set_rng_states(ckpt.meta["rng"])
        return trainer

    @property
    def net(self) -> nn.Module:
        """The adaptive arm's network (your model, when one was given)."""
        return self.arms["adaptive"].net

    @property
    def model(self) -> nn.Module:
        """The adaptive arm's network (the same as :attr:`net`)."""
        return self.arms["adaptive"].net

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.arms["adaptive"].optimizer

    # -- one epoch ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, dict]:
        """One pass over the training data for every arm (same batches); returns loss/accuracy.

        For text: ``batches_per_epoch`` batches of ``batch_size`` random windows (the same for
        every arm, drawn from ``(seed, "windows", epoch)``); the loss is the mean cross-entropy
        per predicted character, and the record adds ``train_bpc``."""
        if self.text is not None:
            return self._train_text_epoch(epoch)
        n = self.x_train.shape[0]
        order = torch.randperm(n, generator=generator(self.config.seed, "shuffle", epoch))
        bs = self.config.batch_size
        n_batches = (n + bs - 1) // bs
        bar = None
        if self.progress:
            try:
                from tqdm import tqdm  # imported here: tqdm comes with the [cli] extra
            except ModuleNotFoundError:  # without it: no progress bar
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=n_batches, unit="batch", leave=False, dynamic_ncols=True)
        try:
            stats = {}
            world, rank = self.dist.world_size, self.dist.rank
            for arm in self.arms.values():
                net, opt = arm.net, arm.optimizer
                model = self._models[arm.name]  # the DDP wrapper in a multi-process run
                net.train()
                total, correct, seen = 0.0, 0, 0
                if bar is not None:  # one bar per epoch counting batches, restarted for each arm
                    bar.reset(total=n_batches)
                    bar.set_description(f"epoch {epoch + 1}/{self.config.epochs} {arm.name}")
                for i in range(n_batches):
                    idx = order[i * bs:(i + 1) * bs]
                    if self.dist.enabled:
                        # this rank's chunk of the global batch; DDP averages over ranks, so scale
                        # the chunk's summed loss by world / |global batch|: the mean over the batch
                        scale = world / len(idx)
                        idx = torch.tensor_split(idx, world)[rank]
                        xb, yb = self.x_train[idx], self.y_train[idx]
                        out = model(xb)
                        ce_sum = F.cross_entropy(out, yb, reduction="sum")
                        loss = _with_penalty(ce_sum * scale, net)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        total += float(ce_sum.detach())
                    else:
                        xb, yb = self.x_train[idx], self.y_train[idx]
                        out = net(xb)
                        ce = F.cross_entropy(out, yb)
                        loss = _with_penalty(ce, net)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        total += float(ce.detach()) * len(idx)
                    correct += int((out.detach().argmax(1) == yb).sum())
                    if bar is not None:
                        seen += len(yb)
                        bar.set_postfix(loss=f"{total / seen:.4f}",
                                        acc=f"{100 * correct / seen:.1f}%", refresh=False)
                        bar.update(1)
                if self.dist.enabled:
                    total, summed = self.dist.all_reduce_sum([total, float(correct)])
                    correct = int(round(summed))
                stats[arm.name] = {"train_loss": total / n, "train_accuracy": correct / n}
        finally:
            if bar is not None:
                bar.close()
        return stats

    def _train_text_epoch(self, epoch: int) -> dict[str, dict]:
        cfg = self.config
        t_len, bs, n_batches = cfg.context_length, cfg.batch_size, cfg.batches_per_epoch
        starts = random_starts(self.x_train.numel(), t_len, (n_batches, bs),
                               generator(cfg.seed, "windows", epoch)).to(self.x_train.device)
        n_tokens = n_batches * bs * t_len
        bar = self._bar(n_batches)
        stats = {}
        world, rank = self.dist.world_size, self.dist.rank
        try:
            for arm in self.arms.values():
                net, opt = arm.net, arm.optimizer
                model = self._models[arm.name]  # the DDP wrapper in a multi-process run
                net.train()
                total, correct, seen = 0.0, 0, 0
                if bar is not None:
                    bar.reset(total=n_batches)
                    bar.set_description(f"epoch {epoch + 1}/{cfg.epochs} {arm.name}")
                for i in range(n_batches):
                    idx = starts[i]
                    # the summed loss over this rank's chunk, scaled to the mean over the global
                    # batch's characters (DDP then averages the ranks' gradients)
                    scale = world / (len(idx) * t_len)
                    if self.dist.enabled:
                        idx = torch.tensor_split(idx, world)[rank]
                    xb, yb = windows(self.x_train, idx, t_len)  # (b, T) each
                    out = model(xb)  # (b, T, V)
                    ce_sum = sequence_loss(out, yb, "sum")
                    loss = _with_penalty(ce_sum * scale, net)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(ce_sum.detach())
                    correct += int((out.detach().argmax(-1) == yb).sum())
                    if bar is not None:
                        seen += yb.numel()
                        bar.set_postfix(bpc=f"{total / seen / math.log(2):.3f}", refresh=False)
                        bar.update(1)
                del out, loss, ce_sum  # no live graph across a structural change
                if self.dist.enabled:
                    total, summed = self.dist.all_reduce_sum([total, float(correct)])
                    correct = int(round(summed))
                stats[arm.name] = {"train_loss": total / n_tokens,
                                   "train_bpc": total / n_tokens / math.log(2),
                                   "train_accuracy": correct / n_tokens}
        finally:
            if bar is not None:
                bar.close()
        return stats

    def _bar(self, n_batches: int):
        """A tqdm bar of ``n_batches`` when progress is on and tqdm is installed, else None."""
        if not self.progress:
            return None
        try:
            from tqdm import tqdm  # imported here: tqdm comes with the [cli] extra
        except ModuleNotFoundError:  # without it: no progress bar
            return None
        return tqdm(total=n_batches, unit="batch", leave=False, dynamic_ncols=True)

    def _guard(self, arm: Arm, epoch: int) -> Callable[[StructuralChange], None]:
        """Measure each change on the probe batch; refuse it when over the tolerance.

        ``epoch`` is the 0-based index the policies take; the record says ``epoch + 1``.
        """
        state = {"before": logits_of(arm.net, self.probe), "t0": time.perf_counter()}
        tol = self.config.tolerance

        def guard(change: StructuralChange) -> None:
            wall = time.perf_counter() - state["t0"]
            after = logits_of(arm.net, self.probe)
            if self.text is not None:  # one row per predicted character: KL per token
                fc = compare_logits(token_logits(state["before"]), token_logits(after))
            else:
                fc = compare_logits(state["before"], after)
            record = {
                "epoch": epoch + 1, "arm": arm.name, "op": change.op, "layer": change.layer,
                "space": change.space, "n": change.n, "width_before": change.width_before,
                "width_after": change.width_after, "widths": record_widths(arm.net),
                **fc.as_dict(), "wall_time": wall,
                "removed_singular_values": list(change.removed_singular_values),
                "predicted_bound": change.predicted_bound,
                "predicted_offset": change.predicted_offset, "refused": False,
            }
            if tol is not None and fc.eps_scaled > tol:
                record["refused"] = True
                self.changes.append(record)
                self._emit("on_change", record)
                state["t0"] = time.perf_counter()
                where = (f"hidden layer {change.layer}" if is_chain_model(arm.net)
                         else f"hidden space {change.space!r}")
                raise ChangeRefused(f"{change.op} of {change.n} neuron(s) in {where}: "
                                    f"eps_scaled {fc.eps_scaled:.3g}% > tolerance {tol}%",
                                    change=change, info=record)
            self.changes.append(record)
            self._emit("on_change", record)
            state["before"] = after
            state["t0"] = time.perf_counter()

        return guard

    def adapt(self, epoch: int) -> list[dict]:
        """Run every arm's policy (end of ``epoch``); returns the change records it produced.

        Multi-process: rank 0 alone runs the policies (and their guard), then broadcasts the
        adapted arms and the new change records; every rank re-wraps them in DDP and the ranks'
        states are verified to be bit-identical.
        """
        start = len(self.changes)
        if not self.dist.enabled:
            self._adapt_local(epoch)
            return self.changes[start:]
        adaptive = [n for n, a in self.arms.items() if not isinstance(a.policy, FixedTopology)]
        error: BaseException | None = None
        if self.dist.is_main:
            try:
                self._adapt_local(epoch)
            except Exception as exc:  # re-raised after telling the other ranks
                error = exc
        self._sync_arms(adaptive, changes_from=start, error=error)
        self._verify(f"after the adaptation of epoch {epoch + 1}")
        return self.changes[start:]

    def _adapt_local(self, epoch: int) -> None:
        for arm in self.arms.values():
            if isinstance(arm.policy, FixedTopology):
                continue
            policy = arm.policy
            policy.guard = self._guard(arm, epoch)  # type: ignore[attr-defined]
            policy.generator = generator(self.config.seed, "grow", epoch)  # type: ignore[attr-defined]
            try:
                policy(arm.net, arm.optimizer, epoch)
            finally:
                policy.guard = None  # type: ignore[attr-defined]
                policy.generator = None  # type: ignore[attr-defined]

    # -- multi-process synchronisation ---------------------------------------------------------
    def _sync_arms(self, names: list[str], *, changes_from: int | None = None,
                   error: BaseException | None = None) -> None:
        """Broadcast rank 0's arms ``names`` (and change records from ``changes_from``); rebuild
        them on the other ranks and wrap every one in a fresh DDP."""
        d = self.dist
        blob = b""
        if d.is_main:
            if error is not None:
                header: dict = {"error": f"{type(error).__name__}: {error}"}
            else:
                blob, arms = serialise_arms({n: self.arms[n].net for n in names},
                                            {n: self.arms[n].optimizer for n in names})
                header = {"arms": arms, "changes": None if changes_from is None
                          else self.changes[changes_from:]}
        else:
            header = {}
        header = d.broadcast_json(header)  # type: ignore[assignment]
        if "error" in header:
            if error is not None:
                raise error
            raise DistributedError(f"rank 0 failed while the other ranks waited for it: "
                                   f"{header['error']}")
        blob = d.broadcast_bytes(blob if d.is_main else None)
        # Every rank, rank 0 included, rebuilds the arms from the same bytes: identical state by
        # construction, and fresh Parameter objects. (Re-wrapping the resized parameters in
        # place is not enough: the old DDP reducer keeps their autograd accumulators, which
        # remember the old shapes.) DDP buckets are tied to the shapes, so wrap afresh.
        from safetensors.torch import load as st_load

        nets, opts = rebuild_arms(header["arms"], st_load(blob), self.config, "rank 0's broadcast")
        for n in names:
            self._models[n] = self.arms[n].net  # drop the old wrapper first
            self.arms[n].net = nets[n].to(self.device)
            move_state(opts[n], self.device)
            self.arms[n].optimizer = opts[n]
            self._models[n] = d.wrap(self.arms[n].net)
        if not d.is_main and header["changes"]:
            self.changes.extend(header["changes"])

    def _verify(self, what: str) -> None:
        """Raise unless every rank holds bit-identical arms (sha256, all-gathered)."""
        digest = state_digest({n: a.net for n, a in self.arms.items()},
                              {n: a.optimizer for n, a in self.arms.items()})
        widths = [w for a in self.arms.values() for w in record_widths(a.net)]
        self.dist.verify_identical(digest, widths, what)

    @torch.no_grad()
    def evaluate(self, arm: Arm) -> dict:
        """``test_loss`` and ``test_accuracy`` on the test set; for text, on every held-out
        window, with ``test_bpc`` (:func:`~isoplastic.train.lm.evaluate_text`)."""
        if self.text is not None:
            return evaluate_text(arm.net, self.x_test, self.y_test)
        out = logits_of(arm.net, self.x_test)
        return {"test_loss": float(F.cross_entropy(out, self.y_test)),
                "test_accuracy": float((out.argmax(1) == self.y_test).double().mean())}

    def run_epoch(self) -> dict:
        """Train, adapt, evaluate one epoch; append and return its metrics record."""
        e = self.epoch
        t0 = time.perf_counter()
        stats = self.train_epoch(e)
        t_train = time.perf_counter() - t0
        new = self.adapt(e)
        record: dict = {}
        for arm in self.arms.values():
            named = named_spectra(arm.net)
            rec = {**stats[arm.name], **self.evaluate(arm), "widths": hidden_widths(arm.net),
                   "singular_values": list(named.values())}
            if not is_chain_model(arm.net):  # the space names, in the order of the lists
                rec["spaces"] = list(named)
            norm = psi_norm(arm.net)
            if norm is not None:
                rec["psi_norm"] = norm
            if arm.name == "adaptive":
                record = {"epoch": e + 1, **rec, "n_changes": sum(not c["refused"] for c in new),
                          "n_refused": sum(c["refused"] for c in new)}
            else:
                record[arm.name] = rec
        if self.text is not None:  # the reference line of the bits-per-character curves
            record["unigram_bpc"] = self.text.unigram_bpc
        record["train_time"] = t_train
        record["epoch_time"] = time.perf_counter() - t0
        if self.dist.enabled:
            record["world_size"] = self.dist.world_size
        self.metrics.append(record)
        self.epoch = e + 1
        if self.run_dir is not None and self.dist.is_main:
            self.save()
        self._emit("on_epoch_end", record)
        return record

    def _emit(self, event: str, record: dict) -> None:
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(self, record)

    # -- files -------------------------------------------------------------------------------
    def save(self) -> None:
        """Checkpoint plus ``config.json``, ``metrics.jsonl``, ``changes.jsonl`` (atomically).

        Ctrl-C is held back until the files are written, so an interrupt leaves a complete
        checkpoint of the last finished epoch and no temporary files.
        """
        assert self.run_dir is not None
        with deferred_interrupt():
            self._save()

    def _save(self) -> None:
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / "config.json", self.config.to_json() + "\n")
        atomic_write(self.run_dir / "metrics.jsonl",
                     "".join(json.dumps(m) + "\n" for m in self.metrics))
        atomic_write(self.run_dir / "changes.jsonl",
                     "".join(json.dumps(c) + "\n" for c in self.changes))
        save_checkpoint(self.run_dir, self.config, self.epoch,
                        {n: a.net for n, a in self.arms.items()},
                        {n: a.optimizer for n, a in self.arms.items()},
                        changes=self.changes, metrics=self.metrics,
                        extra={"world_size": self.dist.world_size, "backend": self.dist.backend}
                        if self.dist.enabled else None, preprocess=self.preprocess,
                        user_info={"input_shape": list(self.x_train.shape[1:])},
                        text=None if self.text is None else self.text_info())

    def text_info(self) -> dict:
        """The checkpoint's ``"text"`` entry: vocabulary, corpus and unigram figures."""
        assert self.text is not None
        return {"vocab": self.text.vocab.chars, "name": self.text.name,
                "unigram_bpc": self.text.unigram_bpc,
                "unigram_test_bpc": self.text.unigram_test_bpc,
                "n_train": int(self.text.train.numel()), "n_test": int(self.text.test.numel())}

    def run(self, until: int | None = None) -> RunResult:
        """Train until ``until`` (default ``config.epochs``) epochs are complete."""
        t0 = time.perf_counter()
        until = self.config.epochs if until is None else until
        if self.run_dir is not None and self.epoch == 0 and self.dist.is_main:
            # a fresh run: drop the files of a run it replaces (overwrite=True; otherwise the
            # directory was checked to hold none), then checkpoint the initial state, so that
            # an interrupt at any point leaves a run that --resume continues bit-identically
            with deferred_interrupt():
                if self._fresh:
                    for name in existing_run_files(self.run_dir):
                        path = self.run_dir / name
                        if path.is_dir():  # the old run's tensorboard/ events
                            import shutil

                            shutil.rmtree(path)
                        else:
                            path.unlink()
                    self._fresh = False
                self._save()
        while self.epoch < until:
            self.run_epoch()
        self.dist.barrier()
        return self.result(time.perf_counter() - t0)

    def save_config(self) -> None:
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / "config.json", self.config.to_json() + "\n")

    def result(self, wall_time: float = 0.0) -> RunResult:
        return RunResult(self.config, self.metrics, self.changes,
                         {n: a.net for n, a in self.arms.items()}, self.run_dir, wall_time)


def fit(config: TrainConfig | None, *, model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None, data: Dataset | None = None,
        progress: bool | None = None,
        resume: str | Path | None = None, report: bool = True,
        dist: DistContext | None = None, device: str | torch.device | None = None,
        overwrite: bool = False, callbacks: Sequence[object] = ()) -> RunResult:
    """Train as configured (or continue the run in ``resume``) and return a :class:`RunResult`.

    When the run has an output directory (``config.out`` or ``resume``), the files are written
    there every epoch and, with ``report=True``, ``report.md`` and its plots at the end. A new
    run refuses a directory that already holds a run unless ``overwrite`` (:class:`RunDirError`).
    With ``resume``, ``config.epochs`` (if a config is given) is the new total.

    ``model``/``optimizer``: train your own model (see :class:`Trainer`); with ``resume``,
    ``model`` is a freshly constructed instance that the saved run is loaded into.
    """
    if config is None and resume is None:
        raise ValueError("fit: pass a TrainConfig, or resume=RUN_DIR to continue a run")
    if resume is not None:
        if optimizer is not None:
            raise ConfigError("fit(resume=...): the optimizer is rebuilt from the checkpoint; "
                              "pass model= only")
        trainer = Trainer.from_checkpoint(resume, model=model, data=data, progress=progress,
                                          epochs=None if config is None else config.epochs,
                                          dist=dist, device=device, callbacks=callbacks)
    else:
        assert config is not None
        trainer = Trainer(config, model=model, optimizer=optimizer, data=data, progress=progress,
                          dist=dist, device=device, overwrite=overwrite, callbacks=callbacks)
    result = trainer.run()
    if report and trainer.run_dir is not None and trainer.dist.is_main:
        from ..plot.report import write_report

        result.report = write_report(trainer.run_dir)
    return result


def _broadcast_checkpoint(run_dir: str | Path, dist: DistContext):
    """Rank 0 reads and verifies the checkpoint in ``run_dir``; every rank gets it."""
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    header: dict = {}
    blob = b""
    error: BaseException | None = None
    if dist.is_main:
        try:
            meta, tensors = read_checkpoint_files(run_dir)
            blob = st_save(tensors)
            header = {"meta": meta}
        except Exception as exc:
            error = exc
            header = {"error": f"{type(exc).__name__}: {exc}"}
    header = dist.broadcast_json(header)  # type: ignore[assignment]
    if "error" in header:
        if error is not None:
            raise error
        raise DistributedError(f"rank 0 could not read the checkpoint in {run_dir}: "
                               f"{header['error']}")
    blob = dist.broadcast_bytes(blob if dist.is_main else None)
    return checkpoint_from(header["meta"], st_load(blob), run_dir)


__all__ = ["RUN_FILES", "Arm", "RunDirError", "RunResult", "Trainer", "build_model",
           "check_run_dir", "check_splits", "check_user_model", "derive_seed", "fit",
           "make_policy", "named_spectra", "prepare_data", "psi_norm", "psi_penalty",
           "record_widths", "resolve_device", "spectra"]
