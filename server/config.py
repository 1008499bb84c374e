"""Settings of `rankstill serve`, each defined once: type, default, description, environment
variable, YAML key and command-line flag all come from the fields below.

    flag            --max-batch-pairs 128      --shadow-rate 0.1
    environment     RANKSTILL_MAX_BATCH_PAIRS  RANKSTILL_SHADOW__RATE
    YAML (--config) max_batch_pairs: 128       shadow: {rate: 0.1}

A flag given on the command line wins over the environment, which wins over the YAML file,
which wins over the default. Unknown YAML keys are refused.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, YamlConfigSettingsSource

from rankstill.scoring import DEFAULT_MAX_BATCH_PAIRS

ENV_PREFIX = "RANKSTILL_"


class BackendKind(str, Enum):
    onnxruntime = "onnxruntime"  # the model runs in-process
    triton = "triton"  # batches go to a Triton server


class LogLevel(str, Enum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


class ShadowSettings(BaseModel):
    """Shadow scoring: copy a sample of requests to a teacher after each response."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: Optional[str] = Field(None, description="Teacher for shadow scoring (off when unset): the URL of a server "
                                   "speaking the TEI /rerank shape (e.g. another `rankstill serve`), or a local ONNX "
                                   "teacher entry from `rankstill teacher export` (run on one low-priority thread).")
    rate: float = Field(0.05, ge=0, le=1, description="Share of requests shadowed; the X-Shadow header (1/0) forces or suppresses.")
    timeout: float = Field(5.0, gt=0, description="Seconds per teacher call.")
    concurrency: int = Field(2, ge=1, description="Teacher calls in flight at most.")
    queue: int = Field(256, ge=1, description="Shadow jobs waiting at most; more are dropped and counted.")
    threads: int = Field(1, ge=1, description="ONNX Runtime threads of a local shadow teacher.")
    labels: Optional[Path] = Field(None, description="Label store folder where shadowed pairs (student and teacher scores) are written.")
    teacher_id: Optional[str] = Field(None, description="Teacher id recorded with harvested labels "
                                      "(default: a local teacher's own id, else shadow-teacher).")
    breaker_failures: int = Field(5, ge=1, description="Consecutive teacher failures that open the circuit breaker.")
    breaker_cooldown: float = Field(30.0, ge=0, description="Seconds an open circuit skips the teacher.")
    flush_rows: int = Field(512, ge=1, description="Harvested pairs buffered before a Parquet part is written.")
    k: int = Field(10, ge=1, description="Cut-off of the agreement metrics (NDCG@k, overlap@k).")

    @property
    def is_remote(self) -> bool:
        return bool(self.teacher) and self.teacher.startswith(("http://", "https://"))


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    model_repo: Path = Field(Path("model_repo"), description="Model repository written by `rankstill export`.")
    model: Optional[str] = Field(None, description="Default rerank model for requests that name none; default: the repository's.")
    recommend_model: Optional[str] = Field(None, description="Default recommender; default: the repository's.")
    max_documents: int = Field(1000, ge=1, description="Most documents accepted in one request.")
    max_batch_pairs: int = Field(DEFAULT_MAX_BATCH_PAIRS, ge=1, description="Most (query, document) pairs merged into one model run.")
    max_queued_pairs: int = Field(8192, ge=1, description="Queue bound in pairs; beyond it requests get 503 + Retry-After.")
    retry_after: int = Field(1, ge=0, description="Seconds sent in Retry-After with a 503.")
    threads: Optional[int] = Field(None, ge=1, description="ONNX Runtime intra-op threads (default: all cores).")
    backend: BackendKind = Field(BackendKind.onnxruntime, description="onnxruntime: run the model in-process; "
                                 "triton: send batches to a Triton server.")
    triton_url: str = Field("127.0.0.1:8001", description="gRPC address of the Triton server (with --backend triton).")
    triton_timeout: float = Field(10.0, gt=0, description="Seconds to wait for Triton before answering 504.")
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    log_level: LogLevel = Field(LogLevel.info, description="uvicorn's log level.")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)


class SettingsError(ValueError):
    """Settings that cannot be used, with every problem named."""


def load_settings(config_file: Path | None = None, **flags) -> ServeSettings:
    """Settings from flags (nested as `shadow={...}`), the environment, an optional YAML file and defaults."""
    settings_cls = ServeSettings
    if config_file is not None:
        if not config_file.is_file():
            raise SettingsError(f"config file {config_file} not found")
        settings_cls = type("ServeSettingsFromFile", (ServeSettings,),
                            {"model_config": {**ServeSettings.model_config, "yaml_file": config_file}})
    try:
        return settings_cls(**flags)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        where = f" (from {config_file}, the environment or flags)" if config_file else ""
        raise SettingsError(f"invalid settings{where}: {problems}. Known settings: {', '.join(known_settings())}") from None


def known_settings() -> list[str]:
    return [f"shadow.{name}" if name else key for key, field in ServeSettings.model_fields.items()
            for name in (ShadowSettings.model_fields if key == "shadow" else [None])]
