"""Relaxations: how architecture parameters α become the op weights of the supernet."""
