"""Deployment runtime: backends, tiling, metrics. Imports no torch at package level."""
