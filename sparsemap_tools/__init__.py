"""sparsemap-tools."""
