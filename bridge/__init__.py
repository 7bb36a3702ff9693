"""The bridged embedding space: modalities, encoder presets, heads, the proxy anchor and training.

Importing this package is cheap: torch and the encoders load only when used.
"""
__version__ = "0.1.0"
