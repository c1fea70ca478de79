"""``isoplastic train``: adaptive-topology training with a fixed-topology control.

Runs unchanged under ``torchrun --nproc_per_node N -m isoplastic train ...`` (data parallel,
``--batch-size`` is the global batch; see ``docs/distributed.md``).

Run directories: a new run refuses a directory that already holds a run (``--resume`` continues
it, ``--overwrite`` replaces it); a refused command writes nothing. ``--resume DIR`` continues
from the last checkpoint; ``--epochs`` is then the run's new *total* (as in a fresh run and in
``config.json``), and any other option that contradicts the saved run is refused and named.
Ctrl-C stops at once, keeps the checkpoint of the last finished epoch and prints the command
that continues the run (bit-identically to an uninterrupted run).
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from pathlib import Path

import click
from click.core import ParameterSource

from ..train.config import INTRINSIC_LENGTHS as INTRINSIC_CHOICES
from ..train.config import OPTIMIZERS, TrainConfig
from ..train.config import PSI_MODES as PSI_CHOICES


def _parse_widths(ctx, param, value: str) -> list[int]:
    try:
        widths = [int(w) for w in value.replace(" ", "").split(",") if w]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers; "
                                 "e.g. --widths 32,32") from None
    if not widths or any(w < 1 for w in widths):
        raise click.BadParameter(f"{value!r}: give at least one hidden width, each >= 1")
    return widths


def _resume_dir(ctx, param, value: str | None) -> str | None:
    # In a multi-process run only rank 0 reads the run directory (other hosts need not see it).
    if value is None:
        return None
    main = int(os.environ.get("WORLD_SIZE", "1")) <= 1 or os.environ.get("RANK", "0") == "0"
    if main and not Path(value).is_dir():
        raise click.BadParameter(f"Directory {value!r} does not exist.")
    return value


def format_summary(result, wall: float) -> str:
    """The short summary printed at the end of ``isoplastic train``."""
    s = result.summary()
    acc = s["final_accuracy"]
    lines = [f"run dir: {result.run_dir}",
             f"epochs: {s['epochs']}   wall time: {wall:.1f} s"]
    if s.get("final_bpc") is not None:
        line = (f"held-out bits per character: adaptive {s['final_bpc']:.3f} (FFN widths "
                f"{s['final_widths']})")
        if s["control_bpc"] is not None:
            line += (f" | control {s['control_bpc']:.3f} (FFN widths {s['control_widths']}) | "
                     f"difference {s['final_bpc'] - s['control_bpc']:+.3f}")
        lines.append(line)
        lines.append(f"unigram entropy of the training text: {s['unigram_bpc']:.3f} bits per "
                     "character")
    adaptive = f"adaptive {100 * acc:.2f} % (hidden widths {s['final_widths']})"
    if s["control_accuracy"] is not None:
        ctrl = s["control_accuracy"]
        lines.append(f"final test accuracy: {adaptive} | control {100 * ctrl:.2f} % "
                     f"(hidden widths {s['control_widths']}) | difference "
                     f"{100 * (acc - ctrl):+.2f} pp")
    else:
        lines.append(f"final test accuracy: {adaptive}")
    lines.append(f"structural changes: {s['n_growth']} growth events (+{s['neurons_added']} "
                 f"neurons), {s['n_shrink']} shrink events (-{s['neurons_removed']} neurons), "
                 f"{s['n_refused']} refused")
    if s["max_eps_neurogenesis"] is not None:
        lines.append(f"max eps_scaled of neurogenesis: {s['max_eps_neurogenesis']:.3g} %")
    if s["max_eps_neurodegeneration"] is not None:
        lines.append(f"max eps_scaled of neurodegeneration: "
                     f"{s['max_eps_neurodegeneration']:.3g} %")
    if result.report is not None:
        lines.append(f"report: {result.report}")
    return "\n".join(lines)


#: Options a resumed run may change: they do not alter what is computed.
RESUME_FREE = ("epochs", "data_dir", "threads", "progress", "device", "log_every", "loggers")

#: Option (parameter name) -> TrainConfig field, for the options that define a run.
CONFIG_OPTIONS = {
    "dataset": "dataset", "model": "model", "channels": "channels",
    "kernel_size": "kernel_size", "widths": "widths", "group_size": "group_size",
    "d_model": "d_model",
    "n_layers": "n_layers", "n_heads": "n_heads", "d_ff": "d_ff",
    "context_length": "context_length", "batches_per_epoch": "batches_per_epoch",
    "batch_size": "batch_size", "lr": "lr",
    "weight_decay": "weight_decay", "optimizer": "optimizer", "momentum": "momentum",
    "psi": "psi", "intrinsic_length": "intrinsic_length", "adapt": "adapt",
    "scaffold": "scaffold", "threshold": "threshold", "schedule": "schedule",
    "tolerance": "tolerance", "init_scale": "init_scale", "probe_size": "probe_size",
    "control": "control", "seed": "seed", "dtype": "dtype", "n_train": "n_train",
    "n_test": "n_test",
}


def _flag(ctx: click.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name:
            return max(param.opts, key=len)
    return f"--{name.replace('_', '-')}"  # pragma: no cover


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE


def resume_conflicts(ctx: click.Context, saved: TrainConfig, resume: str) -> list[str]:
    """The options given on the command line that contradict the saved run, as
    ``--lr 0.5 (saved run: 0.001)`` strings."""
    out = []
    for name, field in CONFIG_OPTIONS.items():
        if not _given(ctx, name):
            continue
        value, old = ctx.params[name], getattr(saved, field)
        if value != old:
            out.append(f"{_flag(ctx, name)} {value!r} (saved run: {old!r})")
    if _given(ctx, "out") and Path(ctx.params["out"]).resolve() != Path(resume).resolve():
        out.append(f"--out {ctx.params['out']!r} (the run continues in {resume!r})")
    if ctx.params.get("overwrite"):
        out.append("--overwrite (a resumed run keeps its files)")
    return out


class ConsoleLog:
    """Trainer callback printing one line every ``every`` epochs (and at the last epoch):
    epoch, training loss, test accuracy (and the control's), hidden widths, the neurons added
    and removed since the previous line (refused changes counted apart), seconds per epoch."""

    def __init__(self, every: int, echo=click.echo) -> None:
        self.every = every
        self.echo = echo
        self.added = self.removed = self.refused = 0
        self.seconds = 0.0
        self.epochs = 0

    def on_change(self, trainer, record: dict) -> None:
        if record["refused"]:
            self.refused += 1
        elif record["op"] == "neurogenesis":
            self.added += record["n"]
        elif record["op"] == "neurodegeneration":
            self.removed += record["n"]

    def on_epoch_end(self, trainer, record: dict) -> None:
        self.seconds += record["epoch_time"]
        self.epochs += 1
        e, total = record["epoch"], trainer.config.epochs
        if self.every <= 0 or (e % self.every and e != total):
            return
        digits = len(str(total))
        if "test_bpc" in record:
            line = (f"epoch {e:{digits}d}/{total}  train bpc {record['train_bpc']:.3f}  "
                    f"held-out bpc {record['test_bpc']:.3f}")
            if "control" in record:
                line += f" (control {record['control']['test_bpc']:.3f})"
        else:
            line = (f"epoch {e:{digits}d}/{total}  loss {record['train_loss']:.4f}  "
                    f"test acc {100 * record['test_accuracy']:6.2f} %")
            if "control" in record:
                line += f" (control {100 * record['control']['test_accuracy']:6.2f} %)"
        line += (f"  widths {record['widths']}  changes +{self.added}/-{self.removed}"
                 + (f" ({self.refused} refused)" if self.refused else "")
                 + f"  {self.seconds / self.epochs:.2f} s/epoch")
        self.echo(line)
        self.added = self.removed = self.refused = 0
        self.seconds, self.epochs = 0.0, 0


def resume_command(ctx: click.Context, run_dir: str | Path, epochs: int) -> str:
    """The command that continues ``run_dir`` with the options this invocation was given that
    do not define the run (device, threads, ...), and the run's total of epochs."""
    parts = ["isoplastic", "train", "--resume", str(run_dir), "--epochs", str(epochs)]
    for name in ("data_dir", "device", "threads"):
        if _given(ctx, name) and ctx.params.get(name) is not None:
            parts += [_flag(ctx, name), str(ctx.params[name])]
    return shlex.join(parts)


@click.command("train")
@click.option("--dataset", default=None,
              help="Data set name (digits, mnist-5k, mnist, fashion-mnist, emnist-letters, "
                   "emnist-aj, cifar10, cifar100; digits and mnist-5k ship with the cli and "
                   "mnist5k extras, the others read downloaded files, --data-dir) or a .npz "
                   "file with arrays x (N, ...) and integer labels y (N,), optionally x_test "
                   "and y_test (else a seeded stratified 80/20 split). "
                   "Inputs are standardised with the training split's statistics, which are "
                   "saved with the model (isoplastic.load applies them). With --model "
                   "transformer: 'stdlib' (built-in text from Python's standard library) or a "
                   "UTF-8 text file FILE.txt (last 10 % held out). Default: digits, or stdlib "
                   "for the transformer.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Directory holding downloaded data sets.")
@click.option("--model", type=click.Choice(["mlp", "cnn", "transformer"]), default="mlp",
              show_default=True,
              help="mlp: isotropic MLP on flattened inputs; cnn: isotropic convolutions over the "
                   "image channels, then a mean-pooled isotropic MLP head of --widths; "
                   "transformer: character-level language model (causal transformer whose FFN "
                   "widths adapt) on text.")
@click.option("--d-model", type=click.IntRange(min=1), default=128, show_default=True,
              help="With --model transformer: residual-stream width.")
@click.option("--n-layers", type=click.IntRange(min=1), default=2, show_default=True,
              help="With --model transformer: number of blocks.")
@click.option("--n-heads", type=click.IntRange(min=1), default=4, show_default=True,
              help="With --model transformer: attention heads (must divide --d-model).")
@click.option("--d-ff", type=click.IntRange(min=1), default=256, show_default=True,
              help="With --model transformer: initial FFN width of every block.")
@click.option("--context-length", type=click.IntRange(min=1), default=64, show_default=True,
              help="With --model transformer: characters per training window.")
@click.option("--batches-per-epoch", type=click.IntRange(min=1), default=150,
              show_default=True,
              help="With --model transformer: an epoch is this many batches of --batch-size "
                   "random windows.")
@click.option("--channels", default="8,8", show_default=True, callback=_parse_widths,
              help="With --model cnn: channels of the convolution layers, comma separated.")
@click.option("--kernel-size", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --model cnn: odd kernel size of every convolution ('same' padding).")
@click.option("--widths", default="64,64", show_default=True, callback=_parse_widths,
              help="Hidden widths (of the MLP, or of the CNN's head), comma separated.")
@click.option("--group-size", type=click.IntRange(min=1), default=None,
              help="With --model mlp: split every hidden layer into isotropic groups of this "
                   "many neurons, each adapting on its own (GroupedIsotropicMLP; the accuracy "
                   "recipe of docs/quality.md, e.g. 16). Default: one group per layer.")
@click.option("--psi", type=click.Choice(list(PSI_CHOICES)), default="trainable+decay",
              show_default=True,
              help="psi vectors (the bias-like term of the next layer that absorbs removed "
                   "neurons' biases): none switches them off (the paper's psi ablation).")
@click.option("--intrinsic-length", type=click.Choice(list(INTRINSIC_CHOICES)),
              default="trainable", show_default=True,
              help="Intrinsic length o of every isotropic activation.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Total number of epochs (default 300; 12 for the transformer); with --resume "
                   "the run's new total (e.g. 40 continues a 30-epoch run by 10 epochs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=48, show_default=True,
              help="Global batch size: under torchrun each of the N processes takes 1/N of "
                   "every batch.")
@click.option("--optimizer", type=click.Choice(list(OPTIMIZERS)), default="adamw",
              show_default=True,
              help="torch.optim optimizer; its state is carried through every structural change.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Learning rate.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-3, show_default=True,
              help="Weight decay of the optimizer.")
@click.option("--momentum", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Momentum of --optimizer sgd or rmsprop.")
@click.option("--adapt", type=click.Choice(["scaffold", "schedule", "none"]), default="scaffold",
              show_default=True, help="Topology policy of the adaptive network.")
@click.option("--scaffold", type=click.IntRange(min=0), default=2, show_default=True,
              help="S: near-silent scaffold neurons kept per hidden layer.")
@click.option("--threshold", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="tau: a neuron with singular value <= tau counts as scaffold.")
@click.option("--schedule", default=None,
              help="Width targets for --adapt schedule: 'start:target' ramp (e.g. 64:16) or "
                   "per-epoch widths '16;64;16'.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=None,
              help="Refuse (roll back) any single change with eps_scaled above this (percent).")
@click.option("--init-scale", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Standard deviation of the outgoing weights of grown neurons.")
@click.option("--probe-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Held-out test samples on which every structural change is measured.")
@click.option("--control/--no-control", default=True, show_default=True,
              help="Also train a fixed-topology twin from the same initial weights.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/<timestamp>); one that holds a run is refused "
                   "unless --overwrite.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace the run already in --out (its run files are deleted when training "
                   "starts; other files are kept).")
@click.option("--resume", type=click.Path(file_okay=False), default=None, callback=_resume_dir,
              help="Continue the run in this directory from its checkpoint (also with a "
                   "different number of torchrun processes); only --epochs (new total), "
                   "--data-dir, --device, --threads and the console options may differ.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the initial weights, the data split, shuffling and growth.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--n-train", type=click.IntRange(min=1), default=None,
              help="Use a seeded subset of this many training samples.")
@click.option("--n-test", type=click.IntRange(min=1), default=None,
              help="Use a seeded subset of this many test samples.")
@click.option("--device", default=None,
              help="Device of a single-process run: cpu (default), auto (CUDA, else MPS, else "
                   "CPU), cuda, cuda:1, mps. Under torchrun the backend decides (nccl: "
                   "cuda:LOCAL_RANK).")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="CPU threads for PyTorch (0: PyTorch's default). Small networks run "
                   "fastest on one thread.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar per epoch with the running loss and accuracy (default: when "
                   "stderr is a terminal).")
@click.option("--log", "loggers", type=click.Choice(["csv", "tensorboard"]), multiple=True,
              help="Also write standard logs into the run directory: csv (metrics.csv) and/or "
                   "tensorboard (tensorboard/, needs the tensorboard package). Repeatable.")
@click.option("--log-every", type=click.IntRange(min=0), default=None,
              help="Print a line every K epochs: loss, accuracy, widths, neurons added/removed "
                   "since the previous line (default: K = ceil(epochs / 30); 0: none).")
@click.pass_context
def train_cmd(ctx: click.Context, **options) -> None:
    """Train an isotropic network whose hidden widths adapt (and its fixed-topology control)."""
    import torch

    from ..train.distributed import init_distributed, shutdown

    if options["threads"]:
        torch.set_num_threads(options["threads"])
    t0 = time.perf_counter()
    dist = init_distributed()  # single process unless launched by torchrun (WORLD_SIZE > 1)
    try:
        _train(ctx, dist, t0, **options)
    finally:
        shutdown(dist)


def _train(ctx, dist, t0, *, resume, out, overwrite, epochs, progress, log_every, loggers,
           device, threads, **options) -> None:
    from ..data import DataError
    from ..errors import IsoplasticError
    from ..train.checkpoint import load_checkpoint
    from ..train.config import ConfigError
    from ..train.trainer import Trainer

    trainer = None
    run_dir = resume if resume is not None else out
    try:
        if resume is not None:
            if dist.is_main:
                saved = load_checkpoint(resume)
                conflicts = resume_conflicts(ctx, saved.config, resume)
                if conflicts:
                    raise click.UsageError(
                        f"--resume {resume} continues the saved run; these options contradict "
                        f"it: {'; '.join(conflicts)}. Drop them, or start a new run with "
                        "another --out")
                if _given(ctx, "epochs") and epochs < saved.epoch:
                    raise click.UsageError(
                        f"--epochs {epochs}: {resume} has already completed {saved.epoch} "
                        f"epochs; --epochs is the run's total, e.g. --epochs "
                        f"{saved.epoch + epochs} for {epochs} more")
                if not _given(ctx, "epochs") and saved.epoch >= saved.config.epochs:
                    click.echo(f"{resume} has completed its {saved.config.epochs} epochs; "
                               f"nothing to do (to continue, pass the new total, e.g. --epochs "
                               f"{saved.config.epochs + 10})", err=True)
            trainer = Trainer.from_checkpoint(resume, progress=progress,
                                              epochs=epochs if _given(ctx, "epochs") else None,
                                              dist=dist, device=device)
            if _given(ctx, "data_dir"):
                trainer.config.data_dir = options["data_dir"]
        else:
            if options["adapt"] == "schedule" and options["schedule"] is None:
                raise click.UsageError("--adapt schedule needs --schedule, e.g. --schedule 64:16")
            if out is None:
                out = run_dir = str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
            try:
                config = TrainConfig(epochs=epochs, out=out, **options)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from exc
            trainer = Trainer(config, progress=progress, dist=dist, device=device,
                              overwrite=overwrite)
        if dist.is_main:
            every = max(1, math.ceil(trainer.config.epochs / 30)) if log_every is None \
                else log_every
            trainer.callbacks.append(ConsoleLog(every))
            from ..train.loggers import LOGGERS

            trainer.callbacks += [LOGGERS[name](trainer.run_dir) for name in loggers]
        try:
            result = trainer.run()
        finally:
            for callback in trainer.callbacks:
                if hasattr(callback, "close"):
                    callback.close()
    except KeyboardInterrupt:
        if dist.is_main:
            _interrupted(ctx, trainer, run_dir)
        ctx.exit(130)
    except DataError as exc:
        raise click.ClickException(f"cannot load the data: {exc}") from exc
    except (IsoplasticError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not dist.is_main:
        return
    from ..plot.report import write_report

    result.report = write_report(trainer.run_dir)
    click.echo(format_summary(result, time.perf_counter() - t0))


def _interrupted(ctx: click.Context, trainer, run_dir) -> None:
    """Say where an interrupted run stands and how to continue it (stderr)."""
    from ..train.checkpoint import META

    err = sys.stderr
    if trainer is None or run_dir is None or not (Path(run_dir) / META).is_file():
        print("\ninterrupted before the run's first checkpoint was written; nothing to resume",
              file=err)
        return
    print(f"\ninterrupted during epoch {trainer.epoch + 1} of {trainer.config.epochs}; "
          f"{run_dir} holds the checkpoint after epoch {trainer.epoch}. Continue with:\n"
          f"  {resume_command(ctx, run_dir, trainer.config.epochs)}", file=err)
