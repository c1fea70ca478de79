"""Training configuration: a plain dataclass with a strict JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError as ConfigError  # defined with the other exceptions; re-exported

CONFIG_VERSION = 1

ADAPT_MODES = ("scaffold", "schedule", "none")
MODELS = ("mlp", "cnn", "transformer")
#: Default data set per model family (``TrainConfig.dataset=None``): images for the MLP and CNN,
#: the built-in text corpus (:data:`isoplastic.text.DEFAULT_CORPUS`) for the transformer.
DEFAULT_DATASETS = {"mlp": "digits", "cnn": "digits", "transformer": "stdlib"}
#: Default number of epochs per model family (``TrainConfig.epochs=None``): the paper's 300 for
#: the small image networks; for the transformer 12 epochs of ``batches_per_epoch`` batches,
#: about ten minutes with the default sizes on two CPU cores (docs/transformers.md).
DEFAULT_EPOCHS = {"mlp": 300, "cnn": 300, "transformer": 12}
DTYPES = ("float32", "float64")
PSI_MODES = ("none", "constant", "trainable", "trainable+decay", "expectation")
INTRINSIC_LENGTHS = ("none", "constant", "trainable")
#: ``--optimizer`` names: the optimizers whose state every structural change transports
#: (:data:`isoplastic.core.optim_state.SUPPORTED_OPTIMIZERS`), lower-cased.
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop", "adagrad", "nadam", "radam", "adadelta")


@dataclass
class TrainConfig:
    """Everything that defines a training run (written to ``config.json``).

    Attributes:
        dataset: data set name (see :data:`isoplastic.data.DATASET_NAMES`) or a ``.npz`` path;
            for ``model="transformer"`` a text corpus name (:data:`isoplastic.text.TEXT_CORPORA`)
            or the path of a UTF-8 text file. ``None``: :data:`DEFAULT_DATASETS` of the model.
        data_dir: directory of downloaded data sets (``None``: environment / defaults).
        widths: hidden-layer widths, e.g. ``[32, 32]``.
        epochs: number of training epochs (``None``: :data:`DEFAULT_EPOCHS` of the model).
        d_model, n_layers, n_heads, d_ff, context_length: the
            :class:`~isoplastic.nn.transformer.IsotropicTransformer` of ``model="transformer"``
            (residual width, blocks, attention heads, initial FFN width of every block, tokens
            per window).
        batches_per_epoch: ``model="transformer"``: an epoch is this many batches of
            ``batch_size`` windows of ``context_length + 1`` characters drawn at random
            positions of the training text (a text has no natural epoch).
        batch_size, lr, weight_decay: the optimizer's settings (the paper trains with AdamW,
            lr 1e-3, weight decay 1e-3, batch 48).
        optimizer: one of :data:`OPTIMIZERS` (``torch.optim`` class, lower-cased).
        momentum: momentum of ``"sgd"`` and ``"rmsprop"`` (ignored by the others).
        intrinsic_length, psi: :class:`~isoplastic.IsotropicMLP` modes.
        adapt: ``"scaffold"`` (neuroadapt each epoch), ``"schedule"`` (width targets) or
            ``"none"``.
        scaffold, threshold: ``S`` and ``τ`` of the scaffold policy.
        schedule: width targets for ``adapt="schedule"``: a list with one entry per epoch, each
            either one width (applied to every hidden layer) or a list of per-layer widths; or a
            string ``"start:target"`` (linear ramp over the epochs, per layer ``"a,b:c,d"``) or
            ``"w0,w1,w2"`` / ``"16;64;16"``-style per-epoch widths (see :func:`parse_schedule`).
        group_size: ``model="mlp"`` only: split every hidden layer into isotropic groups of this
            many neurons (:class:`~isoplastic.GroupedIsotropicMLP`, the accuracy recipe of
            docs/quality.md; each group is a hidden space that adapts on its own). ``None``:
            one group per layer, the paper's :class:`~isoplastic.IsotropicMLP`.
        tolerance: maximum ``eps_scaled`` (percent) a single structural change may cause; a
            larger change is rolled back and logged as refused. ``None``: off.
        seed: seed of initial weights, data split, shuffling and neurogenesis.
        dtype: ``"float32"`` or ``"float64"``.
        probe_size: size of the fixed held-out probe batch used to measure function change.
        init_scale: standard deviation of the outgoing weights of new neurons.
        control: also train a fixed-topology twin from the same initial weights.
        n_train, n_test: optional subset sizes (small runs and tests); for text, the first
            ``n_train`` training and ``n_test`` held-out characters.
        out: run directory.
    """

    dataset: str | None = None
    data_dir: str | None = None
    model: str = "mlp"
    channels: list[int] = field(default_factory=lambda: [8, 8])
    kernel_size: int = 3
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    context_length: int = 64
    batches_per_epoch: int = 150
    widths: list[int] = field(default_factory=lambda: [64, 64])
    group_size: int | None = None
    epochs: int | None = None
    batch_size: int = 48
    lr: float = 1e-3
    weight_decay: float = 1e-3
    optimizer: str = "adamw"
    momentum: float = 0.0
    intrinsic_length: str = "trainable"
    psi: str = "trainable+decay"
    adapt: str = "scaffold"
    scaffold: int = 2
    threshold: float = 0.1
    schedule: list | str | None = None
    tolerance: float | None = None
    seed: int = 0
    dtype: str = "float32"
    probe_size: int = 256
    init_scale: float = 0.01
    control: bool = True
    n_train: int | None = None
    n_test: int | None = None
    out: str | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        self.widths = [int(w) for w in self.widths]
        self.channels = [int(c) for c in self.channels]
        if self.dataset is None:
            self.dataset = DEFAULT_DATASETS.get(self.model, "digits")
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS.get(self.model, 300)
        self.validate()

    @property
    def hidden_widths(self) -> list[int]:
        """Initial widths of every hidden space: conv channels (cnn) then the MLP widths; for
        the transformer the FFN width of every block."""
        if self.model == "transformer":
            return [self.d_ff] * self.n_layers
        return (self.channels if self.model == "cnn" else []) + self.widths

    def validate(self) -> None:
        """Raise :class:`ConfigError` on any out-of-range value."""
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"TrainConfig.{name}={getattr(self, name)!r}: {why}")

        if self.model not in MODELS:
            raise bad("model", f"choose one of {', '.join(MODELS)}")
        if self.model == "mlp" and (not self.widths or any(w < 1 for w in self.widths)):
            raise bad("widths", "give at least one hidden width, each >= 1 (e.g. [32, 32])")
        if any(w < 1 for w in self.widths):
            raise bad("widths", "every hidden width must be >= 1")
        if self.group_size is not None:
            gs = self.group_size
            if isinstance(gs, bool) or not isinstance(gs, int) or gs < 1:
                raise bad("group_size", "must be an integer >= 1, or None for one group per layer")
            if self.model != "mlp":
                raise bad("group_size", f"groups are built for model='mlp' only, not "
                                        f"{self.model!r}; drop group_size")
            uneven = [w for w in self.widths if w % gs]
            if uneven:
                raise bad("group_size", f"does not divide the hidden widths {uneven}; choose "
                                        "widths that are multiples of the group size")
            if self.adapt == "schedule":
                raise bad("group_size", "adapt='schedule' sets whole-layer widths, but every "
                                        "group of a grouped MLP is its own hidden space; use "
                                        "adapt='scaffold' or 'none'")
        if self.model == "cnn":
            if not self.channels or any(c < 1 for c in self.channels):
                raise bad("channels", "give at least one channel count, each >= 1 (e.g. [8, 8])")
            if self.kernel_size < 1 or self.kernel_size % 2 == 0:
                raise bad("kernel_size", "must be an odd integer >= 1 ('same' padding)")
        if self.model == "transformer":
            for name in ("d_model", "n_layers", "n_heads", "d_ff", "context_length",
                         "batches_per_epoch"):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise bad(name, "must be an integer >= 1")
            if self.d_model % self.n_heads:
                raise bad("n_heads", f"must divide d_model={self.d_model} (each head gets "
                                     "d_model / n_heads dimensions)")
        for name in ("epochs", "batch_size", "probe_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "must be an integer >= 1")
        if not self.lr > 0:
            raise bad("lr", "must be > 0")
        if not self.weight_decay >= 0:
            raise bad("weight_decay", "must be >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"choose one of {', '.join(OPTIMIZERS)}")
        if not self.momentum >= 0:
            raise bad("momentum", "must be >= 0")
        if self.psi not in PSI_MODES:
            raise bad("psi", f"choose one of {', '.join(PSI_MODES)}")
        if self.intrinsic_length not in INTRINSIC_LENGTHS:
            raise bad("intrinsic_length", f"choose one of {', '.join(INTRINSIC_LENGTHS)}")
        if self.adapt not in ADAPT_MODES:
            raise bad("adapt", f"choose one of {', '.join(ADAPT_MODES)}")
        if isinstance(self.scaffold, bool) or not isinstance(self.scaffold, int) or self.scaffold < 0:
            raise bad("scaffold", "must be an integer >= 0")
        if not self.threshold >= 0:
            raise bad("threshold", "must be >= 0")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise bad("tolerance", "must be >= 0 (percent) or None (off)")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"choose one of {', '.join(DTYPES)}")
        if not self.init_scale >= 0:
            raise bad("init_scale", "must be >= 0")
        if self.adapt == "schedule":
            if self.schedule is None:
                raise bad("schedule", "adapt='schedule' needs width targets, e.g. '32:8' or "
                                      "[[16], [64], [16]]")
            self.schedule_targets()  # raises ConfigError on bad syntax
        if self.version != CONFIG_VERSION:
            raise bad("version", f"this isoplastic reads config version {CONFIG_VERSION}")

    # -- schedule ---------------------------------------------------------------------------
    def schedule_targets(self) -> list[list[int]]:
        """Per-epoch hidden-width targets for ``adapt="schedule"`` (one list per epoch)."""
        hidden = self.hidden_widths
        return parse_schedule(self.schedule, len(hidden), self.epochs, hidden)

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from a dict; unknown keys raise :class:`ConfigError` naming them."""
        if not isinstance(data, dict):
            raise ConfigError(f"TrainConfig.from_dict: expected a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"TrainConfig: unknown key(s) {', '.join(map(repr, unknown))}; known keys are "
                f"{', '.join(sorted(known))}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_json(Path(path).read_text())


def _ints(text: str) -> list[int]:
    return [int(t) for t in re.split(r"[,\s]+", text.strip()) if t]


def parse_schedule(schedule, n_layers: int, epochs: int, start: list[int]) -> list[list[int]]:
    """Turn a schedule spec into per-epoch per-layer targets.

    Accepted forms:
        * ``"a:b"`` (or ``"a1,a2:b1,b2"``): linear ramp from ``a`` after epoch 0 to ``b`` after the
          last epoch.
        * ``"16;64;16"`` or ``"16,64,16"`` (one width per epoch, every layer), or
          ``"16,16;64,64"`` (``;`` separates epochs, ``,`` layers when more than one layer).
        * a list: one entry per epoch, an int (every layer) or a list of per-layer widths.
    The last target holds for later epochs.
    """
    def err(why: str) -> ConfigError:
        return ConfigError(f"schedule={schedule!r}: {why}; e.g. '32:8' (ramp), '16;64;16' "
                           "(per epoch) or [[16, 16], [64, 64]]")

    def per_layer(v) -> list[int]:
        vals = [int(v)] * n_layers if isinstance(v, int) else [int(x) for x in v]
        if len(vals) == 1:
            vals = vals * n_layers
        if len(vals) != n_layers:
            raise err(f"an entry names {len(vals)} layers but the network has {n_layers}")
        if any(x < 1 for x in vals):
            raise err("widths must be >= 1")
        return vals

    try:
        if isinstance(schedule, str):
            text = schedule.strip()
            if ":" in text:
                a_text, b_text = text.split(":", 1)
                a, b = per_layer(_ints(a_text)), per_layer(_ints(b_text))
                steps = []
                for e in range(epochs):
                    t = (e + 1) / epochs
                    steps.append([round(x + (y - x) * t) for x, y in zip(a, b)])
                return steps
            if ";" in text:
                return [per_layer(_ints(part)) for part in text.split(";") if part.strip()]
            vals = _ints(text)
            if not vals:
                raise err("empty")
            return [per_layer(v) for v in vals]
        if isinstance(schedule, (list, tuple)) and schedule:
            return [per_layer(v) for v in schedule]
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise err(str(exc)) from exc
    raise err("not a string or a non-empty list")
