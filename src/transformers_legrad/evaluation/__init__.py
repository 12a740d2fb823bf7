"""Evaluation helpers kept apart from the method: synthetic scenes with known object masks (`synthetic`)."""
