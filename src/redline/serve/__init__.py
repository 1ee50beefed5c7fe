"""redline.serve: the inference API server (OpenAI-compatible embeddings, cached, batched).

Example::

    from redline.serve import create_app, load_settings
    app = create_app(load_settings(model="redline.serve.testing:create_hashing_model"))
"""

from redline._lazy import lazy_exports as _lazy_exports
from redline.serve.app import create_app as create_app
from redline.serve.model import Model as Model
from redline.serve.model import load_model as load_model
from redline.serve.settings import Settings as Settings
from redline.serve.settings import load_settings as load_settings
from redline.serve.testing import HashingModel as HashingModel
from redline.serve.testing import create_hashing_model as create_hashing_model

__all__, __getattr__, __dir__ = _lazy_exports(__name__)
