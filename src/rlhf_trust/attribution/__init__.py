"""RLHF-adapted DataInf: which HH preference pairs moved each trust vertical (docs/influence.md)."""
