"""difflab: the modern generative-image stack, small enough to train and measure on a laptop CPU.

The core is functional: a noise schedule (:mod:`difflab.schedules`), the forward process and
training loss (:mod:`difflab.diffusion`), samplers that are plain functions over any denoiser
callable (:mod:`difflab.samplers`) and guidance as wrappers around denoisers
(:mod:`difflab.guidance`). Everything else is built on top of those four modules.
"""

__version__ = "0.1.0"


def load_pipeline(name_or_path: str = "shapes-t2i", lora: str | None = None):
    """Load a shipped model by name (see :func:`list_models`) or a pipeline folder; ``lora`` (a
    shipped adapter name or an adapter folder) attaches an LCM-LoRA to a text-to-image model
    (see :func:`difflab.zoo.load_pipeline`)."""
    from difflab.zoo import load_pipeline as _load

    return _load(name_or_path, lora=lora)


def list_models():
    """Shipped models by name, with their folders."""
    from difflab.zoo import list_models as _list

    return _list()
