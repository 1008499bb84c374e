"""Every command answers --help; the distil config refuses unknown keys and names them."""

import pytest
import typer
from typer.testing import CliRunner

from rankstill.cli import app
from rankstill.distill.pipeline import ConfigError, load_config


def command_paths(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from command_paths(command, (*prefix, name))


def test_every_command_has_help():
    root = typer.main.get_command(app)
    paths = list(command_paths(root))
    assert ("distill",) in paths and ("labels", "stats") in paths and ("labels", "merge") in paths and ("label",) in paths
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, path


def test_example_configs_are_valid():
    for name in ("homedepot", "http-teacher", "llm-judge"):
        config = load_config(f"distill/examples/{name}.yaml")
        assert config.name and config.out
    assert load_config("distill/examples/http-teacher.yaml").label.engine == "ray"
    overridden = load_config("distill/examples/homedepot.yaml", {"label.engine": "ray", "max_queries": 5})
    assert overridden.label.engine == "ray" and overridden.max_queries == 5


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nout: y\ndata: {judgments: j.csv, label_range: [3, 1]}\nstudent: {layer: 2}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "student.layer: Extra inputs are not permitted" in str(error.value)
    assert "label_range must be [low, high]" in str(error.value)
