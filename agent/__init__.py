"""shapefarm agent."""
