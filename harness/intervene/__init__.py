"""Head sets, the ablation design, the prompt cache and PCS."""
