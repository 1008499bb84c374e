import subprocess
import sys

from typer.testing import CliRunner

from rankstill.cli import app

from conftest import ROOT


def test_missing_data_fails_with_a_clear_message(tmp_path):
    result = CliRunner().invoke(app, ["teacher", "train", "--data", str(tmp_path / "missing.csv.gz")])
    assert result.exit_code != 0
    assert "--data" in str(result.exception)


def test_serving_never_imports_torch_or_distill():
    code = ("import sys, rankstill.cli, rankstill.server.app; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('rankstill.distill')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
