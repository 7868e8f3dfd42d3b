"""User-facing errors: one clear line and a non-zero exit, never a traceback."""


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
