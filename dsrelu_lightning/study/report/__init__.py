"""Reporting a benchmark: results as read, statistics, ranks, figures, markdown."""
