"""Training stages through TRL."""
