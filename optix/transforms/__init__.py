"""Gradient transformations, one idea per module."""
