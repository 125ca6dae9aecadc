"""Generation, pairwise judging, statistics."""
