"""The tracking store: where runs go (a team's server or the local sqlite store), whether it
answers, and how its URI and errors are shown in one line."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

from rlhf_trust import paths
from rlhf_trust.errors import UserError

EXPERIMENT = "rlhf-trust"
SMOKE = "smoke"   # $RLHF_TRUST_PROFILE of `make smoke`: a random tiny model, numbers are not results


def is_smoke() -> bool:
    return os.environ.get("RLHF_TRUST_PROFILE") == SMOKE


def experiment_name() -> str:
    """$MLFLOW_EXPERIMENT_NAME, else `rlhf-trust`; a smoke run's own `rlhf-trust-smoke`, so its
    runs never sit among results."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or (f"{EXPERIMENT}-{SMOKE}" if is_smoke() else EXPERIMENT)


def registered_model_name(stage: str) -> str:
    """`rlhf-trust-<stage>`; a smoke run's models are `rlhf-trust-smoke-<stage>`, never a real name."""
    return f"{EXPERIMENT}-{SMOKE}-{stage}" if is_smoke() else f"{EXPERIMENT}-{stage}"


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
    """The URI (or a message quoting it) without a password (http://user:pw@host -> http://user:***@host)."""
    from rlhf_trust.errors import mask_secrets

    return mask_secrets(uri)


def check_reachable(uri: str) -> None:
    """A tracking server must answer before a stage starts: one GET of /health, a few seconds
    ($RLHF_TRUST_TRACKING_TIMEOUT), instead of MLflow's retries for minutes. Other stores (sqlite,
    a database URI) are checked by opening the run (`store_unusable`)."""
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


def short_cause(message: str) -> str:
    """The cause in an MLflow client error: `[Errno 111] Connection refused` rather than a page of
    urllib3 repr; else the first line, cut."""
    m = re.search(r"\[Errno -?\d+\] [^\"')\]]+", message)
    return m.group(0) if m else (message.strip().splitlines() or ["unknown error"])[0][:200]


@contextlib.contextmanager
def store_unusable(uri: str) -> Iterator[None]:
    """Any tracking-store error while the run is being opened: one line naming the URI, exit 2."""
    try:
        yield
    except store_errors() as e:
        raise UserError(f"MLflow tracking store {redact(uri)} is unusable: {redact(short_cause(str(e)))}") from None


def store_errors() -> tuple[type[BaseException], ...]:
    """What an unusable tracking store raises: MLflow's errors, OS errors, and SQLAlchemy's for a
    database store (a corrupt, truncated or foreign mlflow.db)."""
    from mlflow.exceptions import MlflowException

    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # mlflow-skinny: no database stores
        return (MlflowException, OSError)
    return (MlflowException, OSError, SQLAlchemyError)
