"""Callbacks: progress, metrics logging, checkpoints and lookups, outside the search loop."""
