"""A trained run as a ready-to-use model: :func:`load` (``isoplastic.load``).

``isoplastic train`` standardises every input feature with the training split's mean and
standard deviation and saves both in the checkpoint (``preprocess.mean``, ``preprocess.std``).
:func:`load` puts them in front of the trained network, so the returned module takes inputs in
the data set's own units: for a ``.npz`` data set the values stored under ``x``; for the
built-in image data sets the pixel scale of :func:`isoplastic.data.load_dataset` (digits
``0..16`` divided by 16, the others ``0..255`` divided by 255, so values in ``[0, 1]``).

For a raw batch ``x`` of shape ``(N, *input_shape)`` the module computes exactly what training
computed::

    z = ((float64(float32(x)) - mean) / std) -> float32 -> the network's dtype
    logits = net(z.reshape(N, -1))     # MLP (flattened features)
    logits = net(z)                    # CNN (C, H, W)

so its test accuracy on the raw test inputs equals the one the run reported.

A language-model run (``--model transformer``) loads as a :class:`TextModel`: the trained
transformer with the run's character vocabulary (saved in the checkpoint), taking token ids or
raw text, and a small sampler (:meth:`TextModel.generate`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..data import Standardisation
from ..text import Vocabulary
from .checkpoint import CheckpointError, load_checkpoint


class TrainedModel(nn.Module):
    """A trained network with its input standardisation inside.

    Args:
        net: the trained :class:`~isoplastic.IsotropicMLP` or :class:`~isoplastic.IsotropicCNN`.
        standardisation: the training set's per-feature statistics (``None``: inputs are
            passed on as they are, cast to the network's dtype).
        flatten: the network takes flattened samples (an MLP).

    Attributes:
        net: the network (its structural operations, spectra etc. remain available).
        input_shape: the shape of one raw sample, e.g. ``(13,)`` or ``(1, 8, 8)``.
        mean, std: float64 buffers (``None`` without standardisation).

    ``forward(x)``: ``x`` of shape ``(N, *input_shape)`` (an MLP also accepts
    ``(N, prod(input_shape))``; a tensor or a NumPy array) -> logits ``(N, n_classes)``.
    """

    def __init__(self, net: nn.Module, standardisation: Standardisation | None, *,
                 flatten: bool, input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.net = net
        self.flatten = bool(flatten)
        if standardisation is not None:
            input_shape = standardisation.input_shape
            self.register_buffer("mean", standardisation.mean.to(torch.float64).clone())
            self.register_buffer("std", standardisation.std.to(torch.float64).clone())
        else:
            self.register_buffer("mean", None)
            self.register_buffer("std", None)
        if input_shape is None:
            raise ValueError("TrainedModel: give input_shape when there is no standardisation")
        self.input_shape = tuple(int(s) for s in input_shape)

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    def _dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        shape = tuple(x.shape[1:])
        accepted = [self.input_shape] + ([(self.n_features,)] if self.flatten else [])
        if x.ndim < 1 or shape not in accepted:
            raise ValueError(
                f"input of shape {tuple(x.shape)}: this model takes raw samples of shape "
                f"(N, {', '.join(map(str, self.input_shape))})"
                + (f" or (N, {self.n_features})" if self.flatten else "")
                + ", in the units of the data set it was trained on")
        if not (x.is_floating_point() or x.dtype in (torch.int8, torch.uint8, torch.int16,
                                                     torch.int32, torch.int64)):
            raise TypeError(f"input dtype {x.dtype}: pass real numbers (float or integer)")
        x = x.to(self._device())
        if self.flatten:
            x = x.reshape(x.shape[0], self.n_features)
        elif shape != self.input_shape:  # pragma: no cover - excluded by the shape check
            x = x.reshape(x.shape[0], *self.input_shape)
        x = x.to(torch.float32)  # the data loaders hold float32 inputs
        if self.mean is not None:
            mean = self.mean.reshape(x.shape[1:])
            std = self.std.reshape(x.shape[1:])
            x = ((x.to(torch.float64) - mean) / std).to(torch.float32)
        return self.net(x.to(self._dtype()))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class labels ``(N,)`` (argmax of the logits) for raw inputs ``x``."""
        return self(x).argmax(dim=1)


class TextModel(nn.Module):
    """A trained character-level language model with its vocabulary.

    Args:
        net: the trained :class:`~isoplastic.IsotropicTransformer`.
        vocab: the run's :class:`~isoplastic.text.Vocabulary` (token 0: unknown character).

    ``forward(tokens)``: ``(batch, T)`` long ids, ``T ≤ context_length`` → logits
    ``(batch, T, V)``; position ``t`` predicts the character after ``t``. ``forward`` also takes
    a ``str`` (encoded, one sequence; its last ``context_length`` characters are used).

    Example:
        >>> model = isoplastic.load("runs/text")                   # doctest: +SKIP
        >>> model.generate("def ", 40, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    """

    def __init__(self, net: nn.Module, vocab: Vocabulary) -> None:
        super().__init__()
        self.net = net
        self.vocab = vocab
        self.context_length = int(net.context_length)

    def encode(self, text: str) -> torch.Tensor:
        """``(1, len(text))`` token ids of ``text`` (unseen characters: token 0)."""
        return self.vocab.encode(text)[None]

    def decode(self, tokens: torch.Tensor) -> str:
        return self.vocab.decode(tokens)

    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    def forward(self, tokens: torch.Tensor | str) -> torch.Tensor:
        if isinstance(tokens, str):
            if not tokens:
                raise ValueError("TextModel: empty text; pass at least one character")
            tokens = self.encode(tokens[-self.context_length:])
        return self.net(tokens.to(self._device()))

    @torch.no_grad()
    def generate(self, prompt: str, n: int, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> str:
        """``prompt`` followed by ``n`` sampled characters (each from the softmax of the last
        position's logits divided by ``temperature``; ``0``: the most likely character; the
        unknown token is never sampled). The context is the last ``context_length``
        characters."""
        if not prompt:
            raise ValueError("TextModel.generate: give a prompt of at least one character")
        if temperature < 0:
            raise ValueError(f"TextModel.generate: temperature={temperature} must be >= 0")
        tokens = self.encode(prompt)
        out = []
        for _ in range(int(n)):
            logits = self.net(tokens[:, -self.context_length:].to(self._device()))[0, -1]
            logits = logits.double().cpu()
            logits[0] = -float("inf")  # never the unknown character
            if temperature == 0:
                nxt = int(logits.argmax())
            else:
                probs = torch.softmax(logits / temperature, dim=0)
                nxt = int(torch.multinomial(probs, 1, generator=generator))
            out.append(nxt)
            tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
        return prompt + self.vocab.decode(out)


def load(run_dir: str | Path, arm: str = "adaptive", *, model: nn.Module | None = None,
         device: str | torch.device = "cpu", recompute: bool = False
         ) -> TrainedModel | TextModel:
    """The trained model of an ``isoplastic train`` run, ready for raw inputs, in eval mode.

    Args:
        run_dir: the run directory (it holds ``checkpoint.safetensors`` and
            ``checkpoint.json``; loading never unpickles).
        arm: ``"adaptive"`` (default) or ``"control"`` (the fixed-topology twin).
        model: for a run that trained your own model (``Trainer(config, model=...)``): a
            freshly constructed instance of it (same class and block layout), whose hidden
            spaces are resized to the saved widths and whose tensors are loaded; it becomes
            ``.net``. Such a run cannot be loaded without it (its architecture cannot be
            rebuilt from a class name): :class:`~isoplastic.train.CheckpointError` says so.
        device: where to put the model.
        recompute: for a checkpoint written before the statistics were saved (isoplastic
            0.1.0), recompute them by loading the run's data set again (same data set, seed
            and subset give the same statistics). Without it such a checkpoint is refused with
            a :class:`~isoplastic.train.CheckpointError` that says so.

    Returns:
        A :class:`TrainedModel` (an ``nn.Module`` in eval mode): raw ``(N, *input_shape)`` ->
        logits ``(N, n_classes)``; ``.net`` is the trained network, ``.predict(x)`` the labels.
        For a language-model run, a :class:`TextModel` (tokens or text -> logits,
        ``.generate``).

    Example:
        >>> model = isoplastic.load("runs/demo")        # doctest: +SKIP
        >>> model.predict(x_raw)                        # doctest: +SKIP
    """
    ckpt = load_checkpoint(run_dir, model=model)
    if arm not in ckpt.nets:
        raise CheckpointError(f"{run_dir}: no arm {arm!r}; this run has "
                              f"{', '.join(map(repr, ckpt.nets))}")
    vocab = ckpt.vocab
    if vocab is not None:
        return TextModel(ckpt.nets[arm], vocab).to(device).eval()
    stats = ckpt.preprocess
    if stats is False:
        if not recompute:
            raise CheckpointError(
                f"{run_dir}: this checkpoint was written before isoplastic saved the input "
                "standardisation, so its network expects standardised inputs; call "
                "isoplastic.load(run_dir, recompute=True) to recompute the statistics from the "
                "run's data set (which must still be readable), or feed the network "
                "(load_checkpoint(run_dir).nets['adaptive']) inputs from "
                "isoplastic.train.prepare_data(config)")
        from .trainer import prepare_data

        stats = prepare_data(ckpt.config).standardisation
    net = ckpt.nets[arm]
    flatten = ckpt.config.model == "mlp"
    input_shape = None
    arch = ckpt.meta["arms"][arm]["architecture"]
    if stats is None and "input_shape" in arch:  # a user's model: the shape it was trained on
        input_shape = tuple(int(s) for s in arch["input_shape"])
    elif stats is None:  # trained on inputs given as they were
        input_shape = (int(net.widths[0]),) if flatten else tuple(net.config()["in_shape"])
    model = TrainedModel(net, stats, flatten=flatten, input_shape=input_shape)
    return model.to(device).eval()


__all__ = ["TextModel", "TrainedModel", "load"]
