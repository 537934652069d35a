"""Exceptions raised by the ML library."""


class TrainingCancelled(Exception):
    """Training stopped because ``should_cancel()`` returned True."""
