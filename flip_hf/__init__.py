"""flip_hf: FLIP CTR models for the Hugging Face stack."""

__version__ = "0.1.0"
