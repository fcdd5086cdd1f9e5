"""Updaters: how the architecture gradient is computed (first order, unrolled second order)."""
