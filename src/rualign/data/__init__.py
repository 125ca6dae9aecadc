"""Data recipes: sources, filters, sampling, mixing, splits."""
