"""Codec measurements (round trips)."""
