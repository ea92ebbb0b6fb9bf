"""A hospital site: its YAML config, data preparation and checks, runtime identity."""
