"""Known upstream noise, silenced at its source before a stage imports the libraries.

Only messages we have read and judged harmless are listed, each matched on its exact text, so any
other warning still shows. Per-step training dicts are turned off in `train.checkpoints.quiet_progress`.
"""

from __future__ import annotations

import logging
import re
import warnings

# (category, message regex) for `warnings.warn` calls in libraries
WARNINGS = (
    # peft and TRL's PPO read the deprecated `is_gradient_checkpointing` property of transformers 5.x
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # TRL configs still echo the deprecated `gradient_checkpointing` argument (we pass activation_checkpointing)
    (FutureWarning, r"`gradient_checkpointing(_kwargs)?` is deprecated"),
    # transformers 5.24's generate() on GPT-NeoX passes the old cache keyword to forward() itself
    (FutureWarning, r"`past_key_values` is deprecated and will be removed in version 5\.40"),
)
# logger name -> message regexes for transformers' `logger.warning_once` calls
LOG_MESSAGES = {
    # generate() on GPT-NeoX/Gemma passes the old cache keyword internally
    "transformers.utils.generic": (r"`past_key_values`/`cache_params` are deprecated",),
    # TRL's PPO rollout passes a generation_config plus output_scores/return_dict_in_generate
    "transformers.generation.utils": (r"Passing `generation_config` together with generation-related",),
}


class _Drop(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]):
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(p.search(msg) for p in self.patterns)


# loggers whose INFO lines say nothing a user acts on (system metrics start/stop, "no GPU")
QUIET_LOGGERS = ("mlflow.system_metrics.system_metrics_monitor",)


def install() -> None:
    for category, pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name, patterns in LOG_MESSAGES.items():
        logger = logging.getLogger(name)  # the same object transformers' get_logger(name) returns
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(patterns))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
