"""Statistics, tables and plots over result files (never the model)."""
