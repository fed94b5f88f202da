"""probes/topology."""
