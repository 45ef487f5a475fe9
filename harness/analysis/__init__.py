"""Statistics, outcomes, metrics, tables, plots, the one reader of committed results, the results summary, the
paper's numbers and claims."""
