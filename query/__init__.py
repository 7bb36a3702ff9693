"""Turn questions into ranked hits (any modality to any other) and measure them."""
