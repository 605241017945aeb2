"""Evaluation: metrics (metrics.py) and the self-contained HTML report (report.py)."""
