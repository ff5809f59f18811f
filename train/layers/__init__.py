"""Model layers: differential attention (paper / DIFF Transformer) and classification heads."""
