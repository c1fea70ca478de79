"""``isoplastic reproduce EXP``: run the paper's experiments by one command.

``transformer`` (not part of ``all``) compares fixed and adaptive isotropic transformers with a
standard pre-LayerNorm GELU transformer of the same size on character-level language modelling
(:mod:`isoplastic.experiments.exp7_transformer`). ``quality`` (not part of ``all``) trains the
isotropic and grouped isotropic MLPs against tanh, ReLU and GELU+LayerNorm MLPs, each at its
learning rate chosen on a validation split (:mod:`isoplastic.experiments.exp8_quality`,
docs/quality.md); ``REPORT.md`` judges claim 13 on it when ``OUT/quality`` exists.

Each experiment writes ``OUT/EXP/results.json`` (every number, mean ± SE over repeats),
``OUT/EXP/table.md`` (the paper's table shape) and PNG figures; ``all`` runs every experiment
and writes ``OUT/REPORT.md`` (the §21 claims against our figures).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

NAMES = ("timing", "invariance", "spectra", "tasks", "abundance", "sparsify", "compare")
#: Experiments beyond the paper's, run by name only (not by ``all``).
EXTRA = ("transformer", "quality")


@click.command("reproduce")
@click.argument("experiment", type=click.Choice([*NAMES, *EXTRA, "all"]))
@click.option("--scale", type=click.Choice(["quick", "paper", "tiny"]), default="quick",
              show_default=True, help="quick: offline, minutes on a CPU; paper: the paper's "
                                      "architectures/epochs/repeats (needs --data-dir); tiny: "
                                      "seconds (tests).")
@click.option("--dataset", default=None,
              help="Override the data set of single-data-set experiments (e.g. fashion-mnist; "
                   "for transformer a UTF-8 text file).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Directory with MNIST / Fashion-MNIST / EMNIST / CIFAR files.")
@click.option("--out", type=click.Path(file_okay=False), default="reproduce", show_default=True,
              help="Output directory; results go to OUT/EXP/.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help="Override the number of repeats.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Override the base seed.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch CPU threads (small networks run fastest on one).")
@click.option("--docs", type=click.Path(file_okay=False), default=None,
              help="With 'all': also write DOCS/REPORT.md and DOCS/figures/*.png.")
def reproduce_cmd(experiment, scale, dataset, data_dir, out, device, repeats, seed, threads,
                  docs) -> None:
    """Reproduce one experiment of arXiv 2602.23405 (or 'all' of them, plus REPORT.md).

    Beyond the paper, run by name only: 'transformer' (isotropic against standard transformers
    on text) and 'quality' (isotropic and grouped MLPs against tuned tanh, ReLU and
    GELU+LayerNorm MLPs; REPORT.md judges claim 13 on it when present).
    """
    import torch

    from ..data import DataError
    from ..experiments.common import env_info
    from ..experiments.registry import run_experiment
    from ..experiments.report import export_docs, write_report

    torch.set_num_threads(threads)
    out_dir = Path(out)
    names = NAMES if experiment == "all" else (experiment,)
    runtimes: dict = {}
    rt_path = out_dir / "runtimes.json"
    if rt_path.is_file():
        runtimes = json.loads(rt_path.read_text())
    t_all = time.perf_counter()
    for name in names:
        click.echo(f"[reproduce] {name} ({scale}) ...", err=True)
        t0 = time.perf_counter()
        try:
            run_experiment(name, out_dir, scale, dataset=dataset, data_dir=data_dir,
                           device=device, repeats=repeats, seed=seed,
                           datasets=None if dataset is None else [dataset],
                           buffer_dataset=dataset)
        except DataError as exc:
            raise click.ClickException(f"{name}: cannot load the data: {exc}") from exc
        runtimes[name] = time.perf_counter() - t0
        click.echo(f"[reproduce] {name} done in {runtimes[name]:.1f} s -> {out_dir / name}",
                   err=True)
    if experiment == "all":
        runtimes["total_s"] = time.perf_counter() - t_all
        m = env_info()
        runtimes["scale"] = scale
        runtimes["machine"] = f"{m['cpu']}, {threads} torch thread(s), torch {m['torch']}"
    out_dir.mkdir(parents=True, exist_ok=True)
    rt_path.write_text(json.dumps(runtimes, indent=1) + "\n")
    if experiment == "all":
        report = write_report(out_dir, runtimes=runtimes)
        click.echo(f"[reproduce] report: {report}", err=True)
        if docs is not None:
            click.echo(f"[reproduce] docs: {export_docs(out_dir, docs)}", err=True)
    click.echo(f"results in {out_dir}", file=sys.stdout)


if __name__ == "__main__":  # until registered in isoplastic.cli: python -m isoplastic.cli.reproduce
    reproduce_cmd()
