"""Trained runs, loaded: ``Model`` (every run), ``ImageModel`` and ``TextModel`` (what runs of those kinds
of data serve besides). ``genforge.load`` picks the class the run's modality names (``MODELS``)."""

from genforge.models.audio import AudioModel
from genforge.models.base import Model
from genforge.models.codes import CodesModel
from genforge.models.images import ImageModel
from genforge.models.music import MusicModel
from genforge.models.tables import TableModel
from genforge.models.text import TextModel

# Modality.model_kind -> class
MODELS = {"generic": Model, "images": ImageModel, "text": TextModel, "table": TableModel, "music": MusicModel,
          "audio": AudioModel, "codes": CodesModel}

__all__ = ["Model", "ImageModel", "TextModel", "TableModel", "MusicModel", "AudioModel", "CodesModel", "MODELS"]
