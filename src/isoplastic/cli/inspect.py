"""``isoplastic inspect RUN_DIR``: architecture, spectra summary and change log of a run."""

from __future__ import annotations

import click


@click.command("inspect")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--max-changes", type=click.IntRange(min=0), default=None,
              help="Print at most this many (most recent) structural changes.")
def inspect_cmd(run_dir: str, max_changes: int | None) -> None:
    """Print the architecture, a singular-value summary and the change log of a run."""
    from ..core.model import hidden_spaces
    from ..ops.diagonalise import singular_values
    from ..train.checkpoint import CheckpointError, is_chain_model, load_checkpoint

    try:
        ckpt = load_checkpoint(run_dir)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        # a checkpoint.json edited by hand (its hash covers only the tensors file) can fail
        # while the networks are rebuilt; report it instead of a traceback
        raise click.ClickException(
            f"{run_dir}: the checkpoint metadata is inconsistent ({type(exc).__name__}: {exc}); "
            "the checkpoint was edited or damaged - restore a copy") from exc
    cfg = ckpt.config
    click.echo(f"run: {run_dir}  (epoch {ckpt.epoch} of {cfg.epochs}, data set {cfg.dataset}, "
               f"adapt {cfg.adapt}, S={cfg.scaffold}, tau={cfg.threshold}, dtype {cfg.dtype}, "
               f"optimizer {cfg.optimizer})")
    click.echo("architecture:")
    for arm, net in ckpt.nets.items():
        arch = net.config()
        n_params = sum(p.numel() for p in net.parameters())
        widths = (net.widths if is_chain_model(net)
                  else {name: sp.size for name, sp in hidden_spaces(net).items()})
        click.echo(f"  {arm}: {net.kind}, widths {widths}  intrinsic_length "
                   f"{arch['intrinsic_length']}  psi {arch['psi']}  parameters {n_params}")
    click.echo("spectra (adaptive):")
    net = ckpt.nets["adaptive"]
    for k, (name, space) in enumerate(hidden_spaces(net).items()):
        s = singular_values(net, name)
        scaffold = int((s <= cfg.threshold).sum())
        label = f"hidden {k}" if is_chain_model(net) else name
        o = "" if space.activation is None else f"  o = {float(space.activation.o):.4g}"
        click.echo(f"  {label}: width {s.numel()}  sigma max {float(s.max()):.4g}  "
                   f"median {float(s.median()):.4g}  min {float(s.min()):.4g}  "
                   f"<= tau: {scaffold}{o}")
    metrics = ckpt.metrics
    if metrics:
        last = metrics[-1]
        if "test_bpc" in last:
            line = f"epoch {last['epoch']}: held-out bits per character {last['test_bpc']:.3f}"
            if "control" in last:
                line += f" (control {last['control']['test_bpc']:.3f})"
            line += f"; unigram entropy {last['unigram_bpc']:.3f}"
        else:
            line = f"epoch {last['epoch']}: test accuracy {100 * last['test_accuracy']:.2f} %"
            if "control" in last:
                line += f" (control {100 * last['control']['test_accuracy']:.2f} %)"
        click.echo(line)
    changes = ckpt.changes
    click.echo(f"change log ({len(changes)} changes):")
    # max(.., 0): with more requested than logged, len - max_changes < 0 would slice from the
    # end and drop the oldest changes ([-2:] of 3 changes shows 2).
    shown = changes if max_changes is None else changes[max(len(changes) - max_changes, 0):]
    if any(c.get("predicted_offset") for c in shown):
        click.echo("  (removals: next pre-activation changes by <= bound * |h| + offset; a "
                   "nonzero offset (psi, bias) makes even a sigma = 0 removal inexact)")
    for c in shown:
        flag = "  REFUSED" if c["refused"] else ""
        predicted = ""
        if c["op"] == "neurodegeneration":
            predicted = (f"  bound {c.get('predicted_bound', 0.0):.3g}  offset "
                         f"{_fmt_offset(c.get('predicted_offset'))}")
        where, widths = ((f"layer {c['layer']}", c["widths"][1:-1]) if is_chain_model(net)
                         else (f"space {c['space']}", c["widths"]))
        click.echo(f"  epoch {c['epoch']:4d}  {c['op']:<17s} {where}  n {c['n']:3d}  "
                   f"widths {widths}  eps_scaled {c['eps_scaled']:.3g} %  "
                   f"kl {c['kl']:.3g}{predicted}  {1000 * c['wall_time']:.1f} ms{flag}")


def _fmt_offset(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
