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
    for name in ("homedepot", "homedepot-http-ray", "http-teacher", "llm-judge"):
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


def test_label_command_reads_a_config_and_takes_a_remote_teacher(judgments, tmp_path):
    import json

    from rankstill.label_store import LabelStore

    from distill_slice import data_section, write_slice
    from teacher_standin import running_standin, standin_logit

    paths = write_slice(judgments, tmp_path / "data", queries_per_split=2, distractors=40)
    config = tmp_path / "distill.yaml"
    config.write_text(json.dumps({"name": "x", "out": str(tmp_path / "out"), "data": data_section(paths),
                                  "teacher": {"url": "http://127.0.0.1:9", "api": "vllm", "model": "m"}}))
    with running_standin() as (url, faults):
        result = CliRunner().invoke(app, ["label", "--config", str(config), "--teacher-url", url, "--teacher-id", "standin",
                                          "--teacher-version", "7", "--out", str(tmp_path / "labels"), "--k", "2"])
    assert result.exit_code == 0, result.output
    store = LabelStore(tmp_path / "labels")
    labels = store.read()
    assert set(labels["teacher_id"]) == {"standin"} and set(labels["teacher_version"]) == {"7"}
    assert store.manifest()["teachers"]["standin@7"]["conversion"].startswith("logit = ln(p / (1 - p)) of the vllm")
    expected = [standin_logit(q, t) for q, t in zip(labels["query"], labels["item_text"])]
    assert labels["teacher_score"].to_numpy() == pytest.approx(expected, abs=1e-3)
