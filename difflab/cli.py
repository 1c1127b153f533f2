"""The ``difflab`` command line (typer).

Each command is a thin shell over a library function; the heavy imports happen inside the
commands so that ``difflab --help`` stays instant.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="difflab: diffusion models and friends, trained and measured on a laptop CPU.",
    no_args_is_help=True,
    add_completion=False,
)
eval_app = typer.Typer(
    help="Measure images or models (ShapesEval, FID, ...).", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


@app.command()
def version() -> None:
    """Print the difflab version."""
    from difflab import __version__

    typer.echo(__version__)


@app.command()
def oracle(
    sampler: list[str] = typer.Option(
        None, "--sampler", "-s", help="Sampler(s) to run; default: all of them."
    ),
    steps: list[int] = typer.Option(
        None, "--steps", help="Step counts to try; default: 5 10 20 50 200."
    ),
    dim: int = typer.Option(2, help="Data dimension of the Gaussian mixture (2 or 16)."),
    num_samples: int = typer.Option(4000, help="Samples per (sampler, steps) cell."),
    seed: int = typer.Option(0, help="Seed of the sampling noise."),
) -> None:
    """Sample an analytic Gaussian mixture with exact denoisers and print each sampler's error.

    No training and no weights: the denoiser is the closed-form optimum, so the printed error is
    the sampler's own discretisation error plus Monte-Carlo noise.
    """
    from difflab.oracle import run_oracle_table

    run_oracle_table(
        samplers=sampler or None,
        steps=steps or None,
        dim=dim,
        num_samples=num_samples,
        seed=seed,
        echo=typer.echo,
    )


# ---- commands of other areas register below (shapes world, evaluation, generation) ----


def main() -> None:  # pragma: no cover - console entry point
    app()
