"""Storage backends of the analyzer: topology history, flows, API resources (DESIGN.md §2.6)."""
