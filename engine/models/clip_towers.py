"""open_clip's CLIP towers and tokenizer for inference, without the start-up cost of all of open_clip.

``import open_clip`` costs about 1.7 s on top of torch on a 2-core CPU (``python -X importtime``):
its ``__init__`` imports every model family, the training losses, the hub code and the image
transforms, and even the tower modules alone pull in more than they use:

* ``open_clip.transformer`` and ``open_clip.modified_resnet`` (the towers :class:`~engine.models.daclip.DaClip`
  builds) import ``open_clip.utils``, whose first lines import ``torchvision.ops.misc`` for
  ``FrozenBatchNorm2d`` (used only to freeze batch norms for training). ``torchvision/__init__``
  imports all of ``torchvision.models`` and ``torchvision.ops``, and ``torchvision.ops.roi_align``
  imports ``torch._dynamo``: 1.2 s, most of the cost.
* ``open_clip.model`` imports ``open_clip.timm_model`` (``timm``, 0.4 s) and ``open_clip.hf_model``
  (``transformers``), both guarded by ``except ImportError``: optional adapters for tower kinds
  DaClip does not support.

Every open_clip release imports torchvision in ``utils.py``, so importing the submodules is not
enough. :func:`import_open_clip` therefore runs open_clip's own tower and tokenizer modules (no
copied code) with three import-time shortcuts, for the duration of that one import only:

1. ``open_clip`` is registered as its real package (its spec and ``__path__``) whose ``__init__`` has
   not run yet; the first attribute that is not there (``open_clip.create_model``, say) runs the
   real ``__init__`` in the same module object, so later users get the whole of open_clip.
2. ``torchvision`` and ``torchvision.ops`` are registered the same way, so ``torchvision.ops.misc``
   loads without the two package initialisers; afterwards every ``torchvision`` module loaded
   meanwhile is dropped from ``sys.modules``, and a later ``import torchvision`` is a normal one
   (``open_clip.utils`` keeps its own copy of ``FrozenBatchNorm2d``).
3. ``timm`` and ``transformers`` look absent, as open_clip allows: in this process open_clip's timm
   and Hugging Face towers are unavailable (DaClip builds only open_clip's ViT and ModifiedResNet).

When open_clip is already imported (training, tests) it is returned as it is. When anything in the
shortcut fails, ``sys.modules`` is put back and open_clip is imported the ordinary way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType

_lock = threading.RLock()

#: imported as if not installed while the towers load (optional in open_clip)
OPTIONAL_ADAPTERS = ("timm", "transformers")


def _unexecuted_package(name: str) -> ModuleType:
    """``name``'s package module, registered in ``sys.modules`` without running its ``__init__``."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    return module


def _complete_on_first_miss(module: ModuleType) -> None:
    """Run ``module``'s real ``__init__`` the first time an attribute it lacks is asked for (PEP 562)."""

    def __getattr__(attr: str):
        with _lock:
            if module.__dict__.get("__getattr__") is __getattr__:
                del module.__dict__["__getattr__"]
                module.__spec__.loader.exec_module(module)
        return getattr(module, attr)

    module.__getattr__ = __getattr__


def import_open_clip() -> ModuleType:
    """The ``open_clip`` module with at least ``CLIP`` and ``tokenize``, imported as cheaply as possible.

    See the module docstring: a fresh process gets open_clip's tower and tokenizer modules without
    torchvision, ``torch._dynamo`` or timm; the rest of open_clip loads on first use.
    """
    with _lock:
        if "open_clip" in sys.modules:
            return sys.modules["open_clip"]
        try:
            package = _lean_import()
        except Exception:  # drop what the shortcut left (torch and the like stay: they import once)
            for name in [n for n in sys.modules if n == "open_clip" or n.startswith("open_clip.")]:
                del sys.modules[name]
            package = None
    return package if package is not None else importlib.import_module("open_clip")


def _lean_import() -> ModuleType:
    import torch  # noqa: F401  (first, outside the shortcut: an extension module imports only once)

    had_torchvision = "torchvision" in sys.modules
    blocked = [name for name in OPTIONAL_ADAPTERS if name not in sys.modules]
    package = _unexecuted_package("open_clip")
    try:
        for name in blocked:
            sys.modules[name] = None  # an ImportError for ``import timm``, as if not installed
        if not had_torchvision:
            _unexecuted_package("torchvision")
            _unexecuted_package("torchvision.ops")
        model = importlib.import_module("open_clip.model")
        tokenizer = importlib.import_module("open_clip.tokenizer")
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
        if not had_torchvision:
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
    # the names the real __init__ binds, as the same objects
    package.CLIP = model.CLIP
    package.tokenize = tokenizer.tokenize
    _complete_on_first_miss(package)
    return package
