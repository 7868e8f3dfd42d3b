"""User-facing errors: one clear line and a non-zero exit, never a traceback."""

import os
import re
from urllib.parse import unquote, urlsplit

# environment variables whose values are secrets: never part of a message
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "PGPASSWORD", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def mask_secrets(text: str) -> str:
    """`text` as a message may show it: every `scheme://user:password@` in it as `user:***@`, and the
    value of every secret variable of the environment (and a password of the tracking URI, also
    percent-decoded, wherever it appears) as `***`."""
    text = re.sub(r"(//[^/:@\s]+):[^/@\s]*@", r"\1:***@", str(text))
    secrets = [os.environ.get(k, "") for k in SECRET_ENV]
    for k in URI_ENV:
        try:
            password = urlsplit(os.environ.get(k, "")).password
        except ValueError:
            password = None
        if password:
            secrets += [password, unquote(password)]
    for secret in sorted({x for x in secrets if len(x) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class UserError(Exception):
    """Bad input the user can fix (params, data, missing files). Exit code 2 by default."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(UserError):
    """A params.yaml key is unknown, mistyped or out of range."""


class DataError(UserError):
    """Input data is unusable: missing, unreadable or corrupt (exit 2)."""


class ValidationFailed(UserError):
    """Data is readable but breaks an expectation (exit 1)."""

    exit_code = 1
