"""shapefarm webui."""
