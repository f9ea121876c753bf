"""Errors, labels, files, typed fields and processes: what every floor uses."""
