"""shapefarm coordinator."""
