"""genforge: train GANs, VAEs, Transformers and Diffusion models on your own data."""
__version__ = "0.1.0"
