"""genforge: train GANs, VAEs, Transformers and Diffusion models on your own data, behind one interface.

    import genforge
    result = genforge.train(family="vae", data="mnist", out="runs/vae", steps=500)
    model = genforge.load("runs/vae")
    images = model.sample(16, seed=0)
    scores = genforge.evaluate("runs/vae", n=1000)["metrics"]
"""

__version__ = "0.1.0"
__all__ = ["train", "load", "make_config", "Model", "prepare", "evaluate", "compare", "GenforgeError"]


def __getattr__(name: str):
    # Imported lazily so that `import genforge` (and `genforge --help`) stays fast.
    if name in ("train", "load", "make_config", "Model", "compare"):
        from genforge import api

        return getattr(api, name)
    if name == "prepare":
        from genforge.modalities import prepare

        return prepare
    if name == "evaluate":
        import genforge.evaluate

        return genforge.evaluate
    if name == "GenforgeError":
        from genforge.errors import GenforgeError

        return GenforgeError
    raise AttributeError(f"module 'genforge' has no attribute {name!r}")
