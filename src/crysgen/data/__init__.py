"""Dataset sources, preparation into CrystalSets, and downloads."""
