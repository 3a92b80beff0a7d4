"""Fuzz targets, one module per area; :func:`fuzz.registry.load_targets` imports them all."""
