"""Statistics, outcomes, metrics, tables, plots, the results summary and claims."""
