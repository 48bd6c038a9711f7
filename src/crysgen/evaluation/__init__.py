"""Metrics for generated crystals (CDVAE's definitions; see reference/anchors.md §1a)."""
