"""difflab: the modern generative-image stack, small enough to train and measure on a laptop CPU.

The core is functional: a noise schedule (:mod:`difflab.schedules`), the forward process and
training loss (:mod:`difflab.diffusion`), samplers that are plain functions over any denoiser
callable (:mod:`difflab.samplers`) and guidance as wrappers around denoisers
(:mod:`difflab.guidance`). Everything else is built on top of those four modules.
"""

__version__ = "0.1.0"
