"""The trustworthiness report: tables with CIs and deltas, figures, top pairs, provenance."""
