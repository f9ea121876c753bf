"""Plots, tables and the findings: how results are shown and judged."""
