"""rlhf-trust: measure what RLHF does to trustworthiness and trace it to the data that caused it."""

__version__ = "0.1.0"
