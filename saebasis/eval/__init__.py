"""Evaluation: offline judges, metrics, the strength-selection protocol and the comparison harness."""
