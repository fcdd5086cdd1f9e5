"""Derivations: from the searched architecture weights to a discrete genotype."""
