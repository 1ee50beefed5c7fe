"""redline.serve: the inference API server (OpenAI-compatible embeddings, cached, batched).

Example::

    from redline.serve import create_app, load_settings
    app = create_app(load_settings(model="redline.serve.testing:create_hashing_model"))
"""

from redline.serve.app import create_app
from redline.serve.model import Model, load_model
from redline.serve.settings import Settings, load_settings
from redline.serve.testing import HashingModel, create_hashing_model

__all__ = [
    "HashingModel",
    "Model",
    "Settings",
    "create_app",
    "create_hashing_model",
    "load_model",
    "load_settings",
]
