"""`rankstill serve` settings: one definition gives the flag, the environment variable and the YAML key."""

import pytest
from typer.testing import CliRunner

from rankstill.cli import app
from rankstill.server.config import BackendKind, SettingsError, load_settings


@pytest.fixture
def captured(monkeypatch):
    """Run `rankstill serve` up to the point where it would start uvicorn; keep the settings."""
    seen = {}
    monkeypatch.setattr("rankstill.server.app.create_app", lambda settings: seen.setdefault("settings", settings))
    monkeypatch.setattr("uvicorn.run", lambda app, **options: seen.update(options))
    return seen


def test_flag_beats_environment_beats_yaml_beats_default(tmp_path, monkeypatch, captured):
    config = tmp_path / "serve.yaml"
    config.write_text("max_batch_pairs: 64\nmax_documents: 10\nthreads: 3\n"
                      "shadow:\n  teacher: http://127.0.0.1:9\n  rate: 0.2\n  queue: 9\n")
    monkeypatch.setenv("RANKSTILL_MAX_DOCUMENTS", "20")
    monkeypatch.setenv("RANKSTILL_SHADOW__RATE", "0.3")
    monkeypatch.setenv("RANKSTILL_PORT", "8123")
    result = CliRunner().invoke(app, ["serve", "--config", str(config), "--max-documents", "30",
                                      "--shadow-queue", "7", "--backend", "triton"])
    assert result.exit_code == 0, result.output
    settings = captured["settings"]
    assert settings.max_documents == 30 and settings.shadow.queue == 7  # flags
    assert settings.shadow.rate == 0.3 and settings.port == 8123  # environment
    assert settings.max_batch_pairs == 64 and settings.threads == 3  # file
    assert settings.shadow.teacher == "http://127.0.0.1:9" and settings.shadow.is_remote
    assert settings.max_queued_tokens == 524_288 and settings.backend is BackendKind.triton  # default; enum from a flag
    assert captured["port"] == 8123 and captured["host"] == "127.0.0.1"


@pytest.mark.parametrize("arguments, fragment", [
    (["--backend", "tensorflow"], "onnxruntime"),
    (["--shadow-rate", "2"], "shadow.rate"),
    (["--max-batch-pairs", "0"], "max_batch_pairs"),
])
def test_bad_values_are_refused_with_the_setting_named(arguments, fragment, captured):
    result = CliRunner().invoke(app, ["serve", *arguments])
    assert result.exit_code != 0 and "settings" not in captured
    assert fragment in result.output


def test_help_documents_each_setting_with_its_environment_variable():
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "RANKSTILL_SHADOW__RATE" in result.output and "RANKSTILL_MAX_QUEUED_TOKENS" in result.output


def test_yaml_with_unknown_or_bad_settings_names_them(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("shadow:\n  rat: 0.5\nmax_batch_pairs: many\n")
    with pytest.raises(SettingsError) as error:
        load_settings(config)
    assert "shadow.rat" in str(error.value) and "max_batch_pairs" in str(error.value)
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
