"""One MLflow run per stage execution, with provenance tags, and the stage's metrics JSON.

Every stage goes through `track_stage`: it opens the run (name = stage), tags it with the git
commit + dirty flag, the `data.dvc` md5, the md5 of each input file, a params hash and library
versions, calls the stage, then writes the final metrics exactly once to MLflow and to the
stage's metrics JSON (atomically). An exception marks the run FAILED and writes no metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import re
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths
from rlhf_trust.config import as_flat_dict, params_hash
from rlhf_trust.errors import UserError

EXPERIMENT = "rlhf-trust"
LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "mlflow", "dvc",
             "great-expectations")
SYSTEM_METRICS_STAGES = ("sft", "rm", "ppo", "dpo", "influence")
REGISTERED_MODEL_PREFIX = "rlhf-trust-"   # one registered model per training stage: rlhf-trust-sft, ...
RESULT_PATHS = ("dvc.lock", "metrics", "eval", "influence", "reports")  # what `dvc repro` writes into git
_SECRET = re.compile(r"(api[_-]?key|token|secret|password)", re.IGNORECASE)


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI (a team's server, e.g. http://mlflow.lab:5000), else the sqlite
    backend anchored at the repository root (survives `dvc exp run --temp`)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.repo_root() / 'mlflow.db'}"


def artifact_root() -> str | None:
    """Where a new experiment's artifacts go: $RLHF_TRUST_ARTIFACT_ROOT (e.g. s3://bucket/mlflow);
    for a tracking server, None = the server's own `--artifacts-destination`; else mlruns/."""
    explicit = os.environ.get("RLHF_TRUST_ARTIFACT_ROOT")
    if explicit:
        return explicit
    if tracking_uri().startswith(("http://", "https://", "databricks")):
        return None
    return (paths.repo_root() / "mlruns").as_uri()


def redact(uri: str) -> str:
    """The URI without a password (http://user:pw@host -> http://user:***@host) for messages."""
    return re.sub(r"(//[^/:@]+):[^/@]*@", r"\1:***@", uri)


def check_reachable(uri: str) -> None:
    """A tracking server must answer before a stage starts: one GET of /health, a few seconds
    ($RLHF_TRUST_TRACKING_TIMEOUT), instead of MLflow's retries for minutes. Other stores (sqlite,
    a database URI) are checked by opening the run (`_store_unusable`)."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    timeout = float(os.environ.get("RLHF_TRUST_TRACKING_TIMEOUT", "5"))
    try:
        # /health needs no credentials; urllib would take user:password@ for part of the host
        health = re.sub(r"//[^/@]+@", "//", uri.rstrip("/")) + "/health"
        urllib.request.urlopen(health, timeout=timeout).close()
    except urllib.error.HTTPError:
        pass  # it answered (auth, proxy path): the run's own requests say what is wrong
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"MLflow tracking server {redact(uri)} is unreachable ({reason}); start it, "
                        "or unset MLFLOW_TRACKING_URI for the local store") from None


def _short(message: str) -> str:
    """The cause in an MLflow client error: `[Errno 111] Connection refused` rather than a page of
    urllib3 repr; else the first line, cut."""
    m = re.search(r"\[Errno -?\d+\] [^\"')\]]+", message)
    return m.group(0) if m else (message.strip().splitlines() or ["unknown error"])[0][:200]


@contextlib.contextmanager
def _store_unusable(uri: str) -> Iterator[None]:
    """Any tracking-store error while the run is being opened: one line naming the URI, exit 2."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as e:
        raise UserError(f"MLflow tracking store {redact(uri)} is unusable: {_short(str(e))}") from None


class _BackgroundLogFailures(logging.Filter):
    """MLflow's background loggers (TRL's async queue, the system-metrics monitor) only log their
    failures, once per batch or sample: the first goes into the stage's run (`logging_failed`) and
    all are dropped, so a dead server is said once, by the stage. One instance per process; records
    arriving after a stage whose logging failed are echoes of that failure and dropped too."""

    LOGGERS = ("mlflow.utils.async_logging.async_logging_queue", "mlflow.system_metrics.system_metrics_monitor")
    FAILURES = ("Failed to log run data", "Failed to get mlflow run", "Failed to log system metrics")

    def __init__(self) -> None:
        super().__init__()
        self.current: StageRun | None = None
        self.last_failed = False

    def install(self, sr: StageRun) -> None:
        for name in self.LOGGERS:
            if self not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(self)
        self.current = sr

    def done(self) -> None:
        self.last_failed = bool(self.current and self.current.logging_failed)
        self.current = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not any(f in message for f in self.FAILURES):
            return True
        if self.current is None:
            return not self.last_failed
        if self.current.logging_failed is None:
            self.current.logging_failed = _short(message)
        return False


_BACKGROUND_FAILURES = _BackgroundLogFailures()


def configure_env() -> None:
    """Offline + no telemetry for every library the pipeline touches."""
    for k, v in {
        "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false", "HF_HUB_DISABLE_TELEMETRY": "1", "TRL_EXPERIMENTAL_SILENCE": "1",
        "TOKENIZERS_PARALLELISM": "false", "HF_MLFLOW_LOG_ARTIFACTS": "0",
        # a dead tracking server costs seconds, not MLflow's default 7 retries with backoff (minutes)
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        # system metrics: a sample every 2 s, logged at once (a tiny stage lasts seconds)
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "2", "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1",
        # offline unless the user opts in (HF_HUB_OFFLINE=0) to hub models or hub data
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }.items():
        os.environ.setdefault(k, v)


def git_info() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    # Dirty = code, params or config differ from the commit. The results a repro itself rewrites
    # (dvc.lock, metrics, eval, influence, reports) do not count, or every stage after the first
    # of a clean run would call the tree dirty.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                *(f":(exclude){p}" for p in RESULT_PATHS))
    return {"git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


def data_version() -> str:
    """The md5 that data.dvc records for data/ (the data version every run is tied to)."""
    dvc_file = Path("data.dvc")
    if not dvc_file.is_file():
        return "untracked"
    m = re.search(r"md5:\s*([0-9a-f]{32}(?:\.dir)?)", dvc_file.read_text())
    return m.group(1) if m else "unknown"


def library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[f"version.{lib}"] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


def input_tags(inputs: list[str | Path]) -> dict[str, str]:
    tags = {}
    for p in map(Path, inputs):
        if p.is_file():
            tags[f"input.{p.as_posix()}.md5"] = fileio.md5_file(p)
        elif p.is_dir():
            sj = p / "stage.json"
            tags[f"input.{p.as_posix()}.md5"] = fileio.read_json(sj).get("md5", "") if sj.is_file() else "dir"
    return tags


DATASET_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".gz")


def datasets(inputs: list[str | Path]) -> list[tuple[str, str, str]]:
    """(name, content md5, source) of each dataset a stage reads: data files among its inputs and
    `data.dvc` (the raw data/ directory, whose digest is DVC's md5 of its content)."""
    out = []
    for p in map(Path, inputs):
        if p.name == "data.dvc" and p.is_file():
            out.append(("data", data_version().removesuffix(".dir"), str(p.resolve().parent / "data")))
        elif p.is_file() and p.name.endswith(DATASET_SUFFIXES) and p.name != "stage.json":
            out.append((p.name.split(".")[0], fileio.md5_file(p), str(p.resolve())))
    return out


def log_datasets(sr: StageRun, stage: str, inputs: list[str | Path]) -> None:
    """`mlflow.log_input` for each dataset (the UI's Dataset column): name, digest, source."""
    found = datasets(inputs)
    if not found:
        return
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for name, digest, source in found:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local files
            warnings.simplefilter("ignore", UserWarning)
            src = resolve_dataset_source(source)
        sr._guard(sr._mlflow.log_input, MetaDataset(src, name=name, digest=digest), context=stage)


def numeric_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested metrics to MLflow keys, keeping finite numbers only."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(numeric_metrics(v, key + "."))
        elif isinstance(v, bool) or isinstance(v, (int, float)) and math.isfinite(v):
            out[key] = float(v)
    return {re.sub(r"[^\w\-./ ]", "_", k): v for k, v in out.items()}


def _safe_params(cfg: Any) -> dict[str, str]:
    if cfg is None or not dataclasses.is_dataclass(cfg):
        return {}
    flat = as_flat_dict(cfg)
    return {k: str(v)[:500] for k, v in flat.items() if not _SECRET.search(k)}


def peak_rss_mb() -> float:
    import resource
    import sys

    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 2**20 if sys.platform == "darwin" else ru / 1024


def pipeline_id(tags: dict[str, str]) -> str:
    """Groups the runs of one pipeline: $RLHF_TRUST_PIPELINE_ID, else the DVC experiment name,
    else commit + params.yaml + data version (re-running the same configuration joins its group)."""
    explicit = os.environ.get("RLHF_TRUST_PIPELINE_ID") or tags.get("dvc.exp_name")
    if explicit:
        return explicit
    params = Path("params.yaml")
    p_sha = hashlib.sha256(params.read_bytes()).hexdigest()[:8] if params.is_file() else "noparams"
    dirty = "-dirty" if tags.get("git.dirty") == "true" else ""
    return f"{tags.get('git.commit', 'unknown')[:8]}{dirty}-p{p_sha}-d{tags.get('data.version', '')[:8]}"


def pipeline_name(pipeline: str, tags: dict[str, str]) -> str:
    """What the parent run is called in the UI: the DVC experiment name (or an explicit
    $RLHF_TRUST_PIPELINE_ID), else `<git short sha>[-dirty] <data version short>`, plus `smoke` for
    `make smoke` runs."""
    if os.environ.get("RLHF_TRUST_PIPELINE_ID") or tags.get("dvc.exp_name"):
        name = pipeline
    else:
        dirty = "-dirty" if tags.get("git.dirty") == "true" else ""
        name = f"{tags.get('git.commit', 'unknown')[:7]}{dirty} {tags.get('data.version', '')[:8]}"
    return f"{name} smoke" if os.environ.get("RLHF_TRUST_PROFILE") == "smoke" else name


def pipeline_params() -> dict[str, str]:
    """params.yaml, flattened (`eval.verticals.privacy.limit`), as the parent run's params."""
    from rlhf_trust.config import read_params
    from rlhf_trust.config.schema import flatten

    try:
        flat = flatten(read_params(Path("params.yaml")), "")
    except (UserError, OSError):
        return {}
    return {k: str(v)[:500] for k, v in flat.items() if not _SECRET.search(k)}


def _pipeline_parent(mlflow: Any, pipeline: str, tags: dict[str, str]) -> str:
    """The parent run of this pipeline (created on first use) under which stage runs nest in the UI.

    One per `dvc repro` / `dvc exp run` (the report stage included: a repro's own results do not
    make the tree dirty); it carries params.yaml as params, the report adds its headline metrics."""
    client = mlflow.tracking.MlflowClient()
    exp = mlflow.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    found = client.search_runs([exp.experiment_id], max_results=1,
                               filter_string=f"tags.`pipeline.id` = '{pipeline}' and tags.kind = 'pipeline'")
    if found:
        return found[0].info.run_id
    keep = {k: v for k, v in tags.items() if k.startswith(("git.", "data.", "version.", "dvc.", "mlflow.source."))}
    run = client.create_run(exp.experiment_id, run_name=pipeline_name(pipeline, tags),
                            tags={**keep, "pipeline.id": pipeline, "kind": "pipeline"})
    from mlflow.entities import Param

    params = pipeline_params()
    items = sorted(params.items())
    for i in range(0, len(items), 100):  # MLflow's log_batch takes at most 100 params
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


class StageRun:
    """Handle given to a stage: log artifacts and extra tags into its MLflow run.

    Logging never stops a stage: once the tracking store fails (a server that died mid-stage), the
    first error is kept in `logging_failed`, later calls are skipped, and the stage goes on to write
    its outputs; `stage_run` then says so in one line."""

    def __init__(self, mlflow: Any, run: Any):
        self._mlflow = mlflow
        self.run = run
        self.run_id = run.info.run_id
        self.logging_failed: str | None = None

    def _guard(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.logging_failed is not None:
            return
        from mlflow.exceptions import MlflowException

        try:
            fn(*args, **kwargs)
        except (MlflowException, OSError) as e:
            self.logging_failed = _short(str(e))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._guard(self._mlflow.log_artifacts, str(path), artifact_path=artifact_path)
        elif path.is_file():
            self._guard(self._mlflow.log_artifact, str(path), artifact_path=artifact_path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._guard(self._mlflow.set_tags, {k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._guard(self._mlflow.log_metrics, numeric_metrics(metrics), step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        self._guard(self._mlflow.log_params, params)

    def register_model(self, stage: str, artifact_path: str, tags: dict[str, str]) -> str | None:
        """A new version of registered model `rlhf-trust-<stage>` from this run's `artifact_path`
        (the model directory logged as artifacts: a LoRA adapter and stage.json), tagged with `tags`.
        Returns the version (None when logging failed)."""
        from mlflow.exceptions import MlflowException

        client = self._mlflow.tracking.MlflowClient()
        name = REGISTERED_MODEL_PREFIX + stage
        if self.logging_failed is not None:
            return None
        try:
            try:
                client.create_registered_model(name, description=f"rlhf-trust {stage} stage output")
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            mv = client.create_model_version(name, source=self._mlflow.get_artifact_uri(artifact_path),
                                             run_id=self.run_id, tags=tags)
            return mv.version
        except (MlflowException, OSError) as e:
            self.logging_failed = _short(str(e))
            return None

    def log_metrics_to(self, run_id: str, metrics: dict[str, Any]) -> None:
        """Metrics into another run (the pipeline's parent), one batch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, 0) for k, v in numeric_metrics(metrics).items()]
        if batch:
            self._guard(self._mlflow.tracking.MlflowClient().log_batch, run_id, metrics=batch)

    def end(self, status: str) -> None:
        """Flush TRL's async logging (its failures surface here), then end the run (a no-op if
        SIGTERM already ended it)."""
        from mlflow.exceptions import MlflowException

        try:  # even after a failure: pending batches must fail now, under the filter, not at exit
            self._mlflow.flush_async_logging()
        except (MlflowException, OSError) as e:
            self.logging_failed = self.logging_failed or _short(str(e))
        # Always called, even after logging failed: end_run pops the run off MLflow's active-run
        # stack before it contacts the server, so an in-process caller can start the next run.
        try:
            self._mlflow.end_run(status)
        except (MlflowException, OSError) as e:
            self.logging_failed = self.logging_failed or _short(str(e))


def process_tags() -> dict[str, str]:
    """Which process runs a stage: lets a later start tell a crashed run from a live one."""
    import socket

    return {"process.pid": str(os.getpid()), "process.host": socket.gethostname()}


def mark_dead_runs_killed(mlflow: Any, stage: str) -> list[str]:
    """Earlier runs of `stage` still RUNNING whose process is gone (SIGKILL, OOM, power loss) -> KILLED.

    Only runs started on this host are judged (a pid means nothing elsewhere). Returns their ids."""
    import socket

    client = mlflow.tracking.MlflowClient()
    exp = mlflow.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    if exp is None:
        return []
    host, done = socket.gethostname(), []
    for r in client.search_runs([exp.experiment_id], max_results=1000,
                                filter_string=f"tags.stage = '{stage}' and attributes.status = 'RUNNING'"):
        pid = r.data.tags.get("process.pid", "")
        if r.data.tags.get("process.host") == host and pid.isdigit() and not fileio.pid_alive(int(pid)):
            client.set_terminated(r.info.run_id, "KILLED")
            done.append(r.info.run_id)
    return done


@contextlib.contextmanager
def _sigterm_kills_run(mlflow: Any, stage: str) -> Iterator[None]:
    """SIGTERM (kill, DVC or a scheduler stopping the stage): end the run as KILLED, exit 143.

    SystemExit unwinds the stage, so its `finally` blocks (atomic writes, output units) still run."""
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        mlflow.end_run("KILLED")  # pops the active run: the `with` block's end_run is then a no-op
        print(f"rlhf-trust {stage}: terminated (SIGTERM); MLflow run marked KILLED", file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stage_run(stage: str, cfg: Any = None, inputs: list[str | Path] = (), run_name: str | None = None,
              tags: dict[str, str] | None = None) -> Iterator[StageRun]:
    configure_env()
    uri = tracking_uri()
    check_reachable(uri)  # before anything else: a stage that cannot be tracked does no work
    import mlflow  # heavy: imported only by stages that run

    with _store_unusable(uri):
        run = _open_run(mlflow, uri, stage, cfg, inputs, run_name, tags)
    sr = StageRun(mlflow, run)
    _BACKGROUND_FAILURES.install(sr)
    with _sigterm_kills_run(mlflow, stage):
        try:
            params = _safe_params(cfg)
            if params:
                sr.log_params(params)
            log_datasets(sr, stage, list(inputs))
            yield sr
        except BaseException:
            sr.end("FAILED")
            raise
        else:
            sr.end("FINISHED")
        finally:
            _BACKGROUND_FAILURES.done()
            if sr.logging_failed:
                import sys

                print(f"rlhf-trust {stage}: warning: MLflow logging to {redact(uri)} failed "
                      f"({sr.logging_failed}); the stage's outputs are written, MLflow run {sr.run_id} "
                      "is incomplete", file=sys.stderr, flush=True)


def _open_run(mlflow: Any, uri: str, stage: str, cfg: Any, inputs: list[str | Path], run_name: str | None,
              tags: dict[str, str] | None) -> Any:
    """Experiment, pipeline parent run and the stage's run with its provenance tags."""
    mlflow.set_tracking_uri(uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_root())
    mlflow.set_experiment(name)
    all_tags = {
        "stage": stage,
        "data.version": data_version(),
        "params.hash": params_hash(cfg) if dataclasses.is_dataclass(cfg) else "",
        **git_info(), **library_versions(), **input_tags(list(inputs)), **(tags or {}),
    }
    exp_name = os.environ.get("DVC_EXP_NAME")
    if exp_name:
        all_tags["dvc.exp_name"] = exp_name
    all_tags["mlflow.source.git.commit"] = all_tags["git.commit"]  # the UI's "Source" commit
    pipeline = pipeline_id(all_tags)
    all_tags["pipeline.id"] = pipeline
    all_tags["mlflow.parentRunId"] = _pipeline_parent(mlflow, pipeline, all_tags)
    all_tags.update(process_tags())
    mark_dead_runs_killed(mlflow, stage)
    # host CPU / memory / disk every few seconds for the stages that do heavy work (needs psutil)
    heavy = stage in SYSTEM_METRICS_STAGES or stage.startswith("eval")
    # two runs of one cell must read differently in the UI's run list: the DVC experiment name, or
    # the stage's params hash (the same cell with other settings gets another name)
    suffix = all_tags.get("dvc.exp_name") or (f"p{all_tags['params.hash'][:6]}" if all_tags.get("params.hash") else "")
    name = f"{run_name or stage} {suffix}".strip()
    return mlflow.start_run(run_name=name, tags=all_tags, log_system_metrics=heavy)


def track_stage(stage: str, fn: Callable[[StageRun], dict[str, Any]], *, cfg: Any = None,
                inputs: list[str | Path] = (), metrics_path: str | Path | None = None,
                run_name: str | None = None, tags: dict[str, str] | None = None,
                metric_keys: tuple[str, ...] | None = None,
                summary: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
    """Run `fn` inside the stage's MLflow run; write its record once (MLflow + JSON).

    The record also carries the stage's wall time and peak RSS. `metrics_path` gets the DVC metrics
    only (headline values, CIs, n: `runinfo.split`, `metric_keys`), `<stem>.run.json` beside it the
    rest (run id, timings, RSS, settings); MLflow gets numbers as metrics and settings as params.
    The stage ends with one summary line: stage, headline numbers (or `summary(metrics)`), wall
    time, peak RSS. `fn`'s own dict is returned."""
    from rlhf_trust import runinfo

    t0 = time.perf_counter()
    with stage_run(stage, cfg, inputs, run_name, tags) as sr:
        metrics = fn(sr)
        # every stage is its own process under DVC, so the process peak is the stage's peak
        recorded = {**metrics, "stage_wall_s": round(time.perf_counter() - t0, 2),
                    "stage_peak_rss_mb": round(peak_rss_mb(), 1)}
        sr.log_metrics({k: v for k, v in recorded.items() if k not in runinfo.SETTING_KEYS})
        logged = _safe_params(cfg)
        settings = {k: v for k, v in runinfo.flat_settings(recorded).items() if k not in logged}
        if settings:
            sr.log_params(settings)
        sr.set_tags({"mlflow.note.content": f"stage {stage}: {len(metrics)} metrics"})
        if metrics_path is not None:
            dvc_metrics, info = runinfo.split({**recorded, "mlflow_run_id": sr.run_id}, metric_keys)
            fileio.write_json(runinfo.run_info_path(metrics_path), info)
            fileio.write_json(metrics_path, dvc_metrics)
    print(summary_line(run_name or stage, recorded, metric_keys, summary(metrics) if summary else None), flush=True)
    return metrics


def summary_line(label: str, recorded: dict[str, Any], metric_keys: tuple[str, ...] | None = None,
                 text: str | None = None) -> str:
    """`<stage>: <headline numbers> | <wall> s, peak RSS <MB> MB`."""
    from rlhf_trust import runinfo

    if text is None:
        shown, _ = runinfo.split(recorded, metric_keys)
        text = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in shown.items() if isinstance(v, (int, float)))
    return (f"{label}: {text or 'done'} | {recorded.get('stage_wall_s', 0):.1f} s, "
            f"peak RSS {recorded.get('stage_peak_rss_mb', 0):.0f} MB")
