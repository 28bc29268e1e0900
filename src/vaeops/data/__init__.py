"""Datasets: raw sources into `data/` (versioned by DVC), and the deterministic split."""
