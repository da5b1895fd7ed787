"""shapefarm scheduler."""
