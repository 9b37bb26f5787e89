"""Tuning every method on the validation split with the same budget (``erlmr tune``; docs/protocol.md)."""
