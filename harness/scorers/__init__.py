"""Head rankings: PCS families, retrieval and induction heads."""
