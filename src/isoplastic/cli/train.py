"""``isoplastic train``: adaptive-topology training with a fixed-topology control.

Runs unchanged under ``torchrun --nproc_per_node N -m isoplastic train ...`` (data parallel,
``--batch-size`` is the global batch; see ``docs/distributed.md``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
from click.core import ParameterSource

from ..train.config import TrainConfig


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


@click.command("train")
@click.option("--dataset", default="digits", show_default=True,
              help="Data set name (digits, mnist, fashion-mnist, emnist-letters, emnist-aj, "
                   "cifar10, cifar100) or a .npz path.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Directory holding downloaded data sets.")
@click.option("--model", type=click.Choice(["mlp", "cnn"]), default="mlp", show_default=True,
              help="mlp: isotropic MLP on flattened inputs; cnn: isotropic convolutions over the "
                   "image channels, then a mean-pooled isotropic MLP head of --widths.")
@click.option("--channels", default="8,8", show_default=True, callback=_parse_widths,
              help="With --model cnn: channels of the convolution layers, comma separated.")
@click.option("--kernel-size", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --model cnn: odd kernel size of every convolution ('same' padding).")
@click.option("--widths", default="64,64", show_default=True, callback=_parse_widths,
              help="Hidden widths (of the MLP, or of the CNN's head), comma separated.")
@click.option("--epochs", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=48, show_default=True,
              help="Global batch size: under torchrun each of the N processes takes 1/N of "
                   "every batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-3, show_default=True)
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
@click.option("--control/--no-control", default=True, show_default=True,
              help="Also train a fixed-topology twin from the same initial weights.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/<timestamp>).")
@click.option("--resume", type=click.Path(file_okay=False), default=None, callback=_resume_dir,
              help="Continue the run in this directory from its checkpoint (also with a "
                   "different number of torchrun processes).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--n-train", type=click.IntRange(min=1), default=None,
              help="Use a seeded subset of this many training samples.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="CPU threads for PyTorch (0: PyTorch's default). Small networks run "
                   "fastest on one thread.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar per epoch (default: when stderr is a terminal).")
@click.pass_context
def train_cmd(ctx: click.Context, dataset, data_dir, model, channels, kernel_size, widths, epochs,
              batch_size, lr, weight_decay,
              adapt, scaffold, threshold, schedule, tolerance, control, out, resume, seed, dtype,
              n_train, threads, progress) -> None:
    """Train an isotropic network whose hidden widths adapt (and its fixed-topology control)."""
    import torch

    from ..train.distributed import init_distributed, shutdown

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    dist = init_distributed()  # single process unless launched by torchrun (WORLD_SIZE > 1)
    try:
        _train(ctx, dist, dataset, data_dir, (model, channels, kernel_size), widths, epochs,
               batch_size, lr, weight_decay,
               adapt, scaffold, threshold, schedule, tolerance, control, out, resume, seed,
               dtype, n_train, progress, t0)
    finally:
        shutdown(dist)


def _train(ctx, dist, dataset, data_dir, arch, widths, epochs, batch_size, lr, weight_decay, adapt,
           scaffold, threshold, schedule, tolerance, control, out, resume, seed, dtype, n_train,
           progress, t0) -> None:
    from ..data import DataError
    from ..errors import IsoplasticError
    from ..train.config import ConfigError
    from ..train.trainer import Trainer

    try:
        if resume is not None:
            explicit = ctx.get_parameter_source("epochs") is ParameterSource.COMMANDLINE
            trainer = Trainer.from_checkpoint(resume, progress=progress,
                                              epochs=epochs if explicit else None, dist=dist)
        else:
            if adapt == "schedule" and schedule is None:
                raise click.UsageError("--adapt schedule needs --schedule, e.g. --schedule 64:16")
            if out is None:
                out = str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
            try:
                config = TrainConfig(
                    dataset=dataset, data_dir=data_dir, model=arch[0], channels=arch[1],
                    kernel_size=arch[2], widths=widths, epochs=epochs,
                    batch_size=batch_size, lr=lr, weight_decay=weight_decay, adapt=adapt,
                    scaffold=scaffold, threshold=threshold, schedule=schedule,
                    tolerance=tolerance, seed=seed, dtype=dtype, control=control, out=out,
                    n_train=n_train)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from exc
            trainer = Trainer(config, progress=progress, dist=dist)
        result = trainer.run()
    except DataError as exc:
        raise click.ClickException(f"cannot load the data: {exc}") from exc
    except (IsoplasticError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not dist.is_main:
        return
    from ..plot.report import write_report

    result.report = write_report(trainer.run_dir)
    click.echo(format_summary(result, time.perf_counter() - t0))
