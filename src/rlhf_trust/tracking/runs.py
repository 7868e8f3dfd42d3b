"""One MLflow run per stage execution: open it (experiment, pipeline parent, provenance tags), hand
the stage a `StageRun` to log into, and end it FINISHED, FAILED or KILLED."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlhf_trust.config import params_hash
from rlhf_trust.tracking.env import configure_env
from rlhf_trust.tracking.provenance import (
    data_version,
    datasets,
    git_info,
    input_tags,
    library_versions,
    pipeline_id,
    pipeline_name,
    pipeline_params,
    process_tags,
    safe_params,
)
from rlhf_trust.tracking.reaper import mark_dead_runs_killed, sigterm_kills_run
from rlhf_trust.tracking.store import (
    artifact_root,
    check_reachable,
    experiment_name,
    is_smoke,
    redact,
    registered_model_name,
    short_cause,
    store_unusable,
    tracking_uri,
)

SYSTEM_METRICS_STAGES = ("sft", "rm", "ppo", "dpo", "influence")


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
            self.current.logging_failed = short_cause(message)
        return False


_BACKGROUND_FAILURES = _BackgroundLogFailures()


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


def _pipeline_parent(mlflow: Any, pipeline: str, tags: dict[str, str]) -> str:
    """The parent run of this pipeline (created on first use) under which stage runs nest in the UI.

    One per `dvc repro` / `dvc exp run` (the report stage included: a repro's own results do not
    make the tree dirty); it carries params.yaml as params, the report adds its headline metrics."""
    client = mlflow.tracking.MlflowClient()
    exp = mlflow.get_experiment_by_name(experiment_name())
    found = client.search_runs([exp.experiment_id], max_results=1,
                               filter_string=f"tags.`pipeline.id` = '{pipeline}' and tags.kind = 'pipeline'")
    if found:
        return found[0].info.run_id
    keep = {k: v for k, v in tags.items()
            if k.startswith(("git.", "data.", "version.", "dvc.", "mlflow.source.", "profile"))}
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
            self.logging_failed = short_cause(str(e))

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
        """A new version of registered model `rlhf-trust-<stage>` (a smoke run's: `rlhf-trust-smoke-<stage>`) from this run's `artifact_path`
        (the model directory logged as artifacts: a LoRA adapter and stage.json), tagged with `tags`.
        Returns the version (None when logging failed)."""
        from mlflow.exceptions import MlflowException

        client = self._mlflow.tracking.MlflowClient()
        name = registered_model_name(stage)
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
            self.logging_failed = short_cause(str(e))
            return None

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        """Columns as an MLflow table artifact: the run page shows it as rows."""
        self._guard(self._mlflow.log_table, data=columns, artifact_file=artifact_file)

    def log_system_sample(self, step: int) -> None:
        """One system-metrics sample (CPU %, memory) now, under MLflow's `system/` names: a run shorter
        than the background monitor's interval still records its host's load (needs psutil)."""
        try:
            import psutil
        except ImportError:
            return
        mem = psutil.virtual_memory()
        self.log_metrics({"system/cpu_utilization_percentage": psutil.cpu_percent(interval=None),
                          "system/system_memory_usage_megabytes": (mem.total - mem.available) / 2**20,
                          "system/system_memory_usage_percentage": mem.percent}, step=step)

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
            self.logging_failed = self.logging_failed or short_cause(str(e))
        # Always called, even after logging failed: end_run pops the run off MLflow's active-run
        # stack before it contacts the server, so an in-process caller can start the next run.
        try:
            self._mlflow.end_run(status)
        except (MlflowException, OSError) as e:
            self.logging_failed = self.logging_failed or short_cause(str(e))
        self.extend_parent()

    def extend_parent(self) -> None:
        """The pipeline's parent run ends when its latest stage does: it spans the pipeline (its
        start is the first stage's), not the instant it was created."""
        parent = self.run.data.tags.get("mlflow.parentRunId")
        if parent:
            self._guard(self._mlflow.tracking.MlflowClient().set_terminated, parent, "FINISHED",
                        end_time=int(time.time() * 1000))


@contextlib.contextmanager
def stage_run(stage: str, cfg: Any = None, inputs: list[str | Path] = (), run_name: str | None = None,
              tags: dict[str, str] | None = None) -> Iterator[StageRun]:
    configure_env()
    uri = tracking_uri()
    check_reachable(uri)  # before anything else: a stage that cannot be tracked does no work
    import mlflow  # heavy: imported only by stages that run

    with store_unusable(uri):
        run = _open_run(mlflow, uri, stage, cfg, inputs, run_name, tags)
    sr = StageRun(mlflow, run)
    _BACKGROUND_FAILURES.install(sr)
    with sigterm_kills_run(mlflow, stage):
        try:
            params = safe_params(cfg)
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
                      f"({redact(sr.logging_failed)}); the stage's outputs are written, MLflow run {sr.run_id} "
                      "is incomplete", file=sys.stderr, flush=True)


def _open_run(mlflow: Any, uri: str, stage: str, cfg: Any, inputs: list[str | Path], run_name: str | None,
              tags: dict[str, str] | None) -> Any:
    """Experiment, pipeline parent run and the stage's run with its provenance tags."""
    mlflow.set_tracking_uri(uri)
    name = experiment_name()
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_root())
    mlflow.set_experiment(name)
    all_tags = {
        "stage": stage,
        "data.version": data_version(),
        "params.hash": params_hash(cfg) if dataclasses.is_dataclass(cfg) else "",
        **git_info(), **library_versions(), **input_tags(list(inputs)), **(tags or {}),
    }
    if is_smoke():
        all_tags["profile"] = "smoke"   # `compare` refuses a smoke run: its results are in no git or DVC
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
