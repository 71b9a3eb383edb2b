"""Fleet core: vehicles, drivers and who drives what (assignments)."""
