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
from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, YamlConfigSettingsSource

from rankstill.scoring import DEFAULT_LANES, DEFAULT_MAX_BATCH_PAIRS

ENV_PREFIX = "RANKSTILL_"


class BackendKind(str, Enum):
    onnxruntime = "onnxruntime"  # the model runs in-process
    triton = "triton"  # batches go to a Triton server


class LongDocuments(str, Enum):
    truncate = "truncate"  # cut the pair to the model's window (longer side first)
    chunk = "chunk"  # score overlapping windows of the document with the query; keep the best


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
    model_alias: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="NAME=MODEL: requests naming NAME (e.g. a client's default `rerank-v3.5`) get "
        "MODEL; several allowed (comma-separated in the environment).")
    strict_models: bool = Field(False, description="Answer 404 to a model name the server does not hold (default: "
                                "such requests get the default model, as clients send their own default names).")
    long_documents: LongDocuments = Field(LongDocuments.truncate, description="Pairs longer than the model's window: "
                                          "truncate, or chunk (overlapping windows of the document, best score kept); "
                                          "a request may choose with `long_documents`.")
    chunk_overlap: int = Field(16, ge=0, description="Tokens shared by consecutive windows when chunking.")
    max_documents: int = Field(1000, ge=1, description="Most documents accepted in one request.")
    max_document_chars: int = Field(100_000, ge=1, description="Most characters in one document or query (422 beyond).")
    max_request_tokens: int = Field(262_144, ge=1, description="Most tokens one request may send to the model, windows included (422 beyond).")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1, description="Largest request body; larger ones get 413 before parsing.")
    max_batch_tokens: int = Field(16_384, ge=1, description="Token budget of one batch: queued requests are merged "
                                  "until their tokens would pass it (as TEI's max_batch_tokens).")
    max_batch_pairs: int = Field(DEFAULT_MAX_BATCH_PAIRS, ge=1, description="Most pairs in one model run (a batch is "
                                 "cut into length-sorted sub-batches of at most this many, each padded to its own longest).")
    max_queued_tokens: int = Field(524_288, ge=1, description="Queue bound in tokens; beyond it requests get 503 + Retry-After.")
    max_queue_ms: float = Field(2000.0, gt=0, description="Admit a request only while the expected wait for the model "
                                "is below this; beyond it 503 + Retry-After.")
    retry_after: int = Field(1, ge=0, description="Least seconds sent in Retry-After with a 503.")
    max_connections: int = Field(1024, ge=1, description="Open connections at most; more are closed at once.")
    request_timeout: float = Field(10.0, gt=0, description="Seconds a client has to send a request's headers and body; "
                                   "then the connection is closed.")
    shutdown_timeout: float = Field(10.0, gt=0, description="On SIGTERM: seconds to answer accepted requests before exiting.")
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Keys accepted as `Authorization: Bearer KEY` on every route but /healthz and "
        "/readyz (several allowed; comma-separated in RANKSTILL_API_KEY). None: no authentication.")
    reload_interval: float = Field(10.0, ge=0, description="Seconds between checks of the model repository for new "
                                   "versions (0: only on POST /admin/reload or SIGHUP).")
    threads: Optional[int] = Field(None, ge=1, description="ONNX Runtime threads of a model, split among its lanes (default: all cores).")
    lanes: int = Field(DEFAULT_LANES, ge=1, description="ONNX Runtime sessions per rerank model, running a batch's "
                       "sub-batches side by side (at most --threads).")
    backend: BackendKind = Field(BackendKind.onnxruntime, description="onnxruntime: run the model in-process; "
                                 "triton: send batches to a Triton server.")
    triton_url: str = Field("127.0.0.1:8001", description="gRPC address of the Triton server (with --backend triton).")
    triton_timeout: float = Field(10.0, gt=0, description="Seconds to wait for Triton before answering 504.")
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    log_level: LogLevel = Field(LogLevel.info, description="uvicorn's log level.")

    @field_validator("model_alias", "api_key", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("model_alias")
    @classmethod
    def _aliases_name_a_model(cls, aliases: list[str]) -> list[str]:
        for alias in aliases:
            name, _, target = alias.partition("=")
            if not name.strip() or not target.strip():
                raise ValueError(f"model alias {alias!r} is not NAME=MODEL")
        return aliases

    @property
    def aliases(self) -> dict[str, str]:
        return dict(tuple(part.strip() for part in alias.split("=", 1)) for alias in self.model_alias)

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
