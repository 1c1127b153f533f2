"""The command line (through typer's test runner, as a user would call it)."""

from typer.testing import CliRunner

from difflab import __version__
from difflab.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_oracle_prints_the_table():
    result = runner.invoke(
        app,
        ["oracle", "--sampler", "ddim", "--steps", "5", "--steps", "50", "--num-samples", "500"],
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| ddim")]
    assert len(rows) == 2
    chi2 = [float(row.split("|")[7]) for row in rows]
    assert chi2[0] > chi2[1]


def test_oracle_rejects_unknown_sampler():
    result = runner.invoke(app, ["oracle", "--sampler", "plms"])
    assert result.exit_code != 0
    assert "unknown sampler 'plms'" in str(result.exception) + result.output
