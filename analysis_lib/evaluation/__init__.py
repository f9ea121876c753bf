"""Inference, the study's metrics, resource measurement and Michel reconstruction."""
