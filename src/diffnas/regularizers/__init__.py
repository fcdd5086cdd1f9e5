"""Regularizers: terms added to the validation loss of the architecture step."""
