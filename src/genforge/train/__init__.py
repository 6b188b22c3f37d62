"""Training: the Trainer, checkpoints, devices, schedules.

``genforge.train`` is also this package once any of it is imported, so the package is callable:
calling it calls ``genforge.api.train``."""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from genforge.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
