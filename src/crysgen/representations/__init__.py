"""Pure, reversible crystal representations (no model code)."""
