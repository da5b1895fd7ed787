"""shapefarm protocol."""
