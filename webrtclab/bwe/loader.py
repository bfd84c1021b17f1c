"""Estimator specs: ``"package.module:Class"``, ``"path/to/file.py:Class"``, built-ins.

A spec names how to make one estimator per connection:

- ``"package.module:Class"`` -- imported like any module (``sys.path``), the class
  called with no arguments;
- ``"path/to/BandwidthEstimator.py:Estimator"`` -- a file loaded as a module, so an
  estimator in OpenNetLab's layout runs without changes;
- ``"fixed:<bps>"`` (or ``"fixed:800k"``) -- :class:`~webrtclab.bwe.FixedEstimator`;
- ``"onnx:<path>"`` -- :class:`~webrtclab.bwe.OnnxEstimator` (needs ``onnxruntime``).

From Python, a class (one instance per connection, made with no arguments), a
zero-argument factory function, or an instance (shared by all of the peer's
connections) works as well.  Every refusal is a
:class:`~webrtclab.exceptions.ConfigurationError` quoting the spec.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..exceptions import ConfigurationError
from .interface import Estimator

__all__ = ["EstimatorFactory", "check_estimator", "describe", "estimator_factory"]

EstimatorFactory = Callable[[], Estimator]

_FIXED = re.compile(r"fixed:(\d+)(k?)", re.IGNORECASE)
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_NAME = re.compile(r"[A-Za-z_]\w*")
_METHODS = ("report_states", "get_estimated_bandwidth")


def check_estimator(obj: Any, what: str) -> None:
    """Refuse ``obj`` (a class or an instance) unless it has both estimator methods."""
    missing = [name for name in _METHODS if not callable(getattr(obj, name, None))]
    if missing:
        raise ConfigurationError(
            f"{what} is not an estimator: it has no {' and no '.join(missing)} method "
            f"(an estimator has report_states(stats) and get_estimated_bandwidth())"
        )


def describe(estimator: Any) -> str:
    """A spec string for ``estimator`` (for stats, result folders and repr)."""
    if isinstance(estimator, str):
        return estimator
    cls = estimator if isinstance(estimator, type) else type(estimator)
    return f"{cls.__module__}:{cls.__qualname__}"


def estimator_factory(spec: Any) -> EstimatorFactory:
    """How to make the estimator of one connection from ``spec`` (checked now)."""
    if isinstance(spec, str):
        return _from_spec(spec)
    if isinstance(spec, type):
        return _from_class(spec, repr(spec))
    if callable(getattr(spec, "report_states", None)):
        check_estimator(spec, repr(spec))
        instance: Estimator = spec
        return lambda: instance
    if callable(spec):
        return _from_callable(spec)
    raise ConfigurationError(
        f"estimator {spec!r} must be a spec string, a class, a factory or an estimator"
    )


def _from_callable(factory: Callable[[], Any]) -> EstimatorFactory:
    def make() -> Estimator:
        made = factory()
        check_estimator(made, f"what {factory!r} returned ({made!r})")
        return made

    return make


def _from_class(cls: type, what: str) -> EstimatorFactory:
    check_estimator(cls, what)
    try:
        inspect.signature(cls).bind()
    except TypeError as exc:
        raise ConfigurationError(
            f"{what} cannot be made without arguments ({exc}); pass an instance "
            f"or a factory instead"
        ) from None
    except ValueError:
        pass  # no signature to read (a builtin): try it when it is needed
    return _from_callable(cls)


def _from_spec(spec: str) -> EstimatorFactory:
    text = spec.strip()
    if not text:
        raise ConfigurationError(
            'empty estimator spec: use "package.module:Class", "path/file.py:Class", '
            '"fixed:<bps>" or "onnx:<path>"'
        )
    fixed = _FIXED.fullmatch(text)
    if fixed is not None:
        from .builtin import FixedEstimator

        bps = int(fixed.group(1)) * (1000 if fixed.group(2) else 1)
        if bps < 1000:
            raise ConfigurationError(f"estimator {spec!r}: need at least 1000 bit/s, got {bps}")
        return lambda: FixedEstimator(bps)
    if text.lower().startswith("fixed:"):
        raise ConfigurationError(
            f"estimator {spec!r}: fixed takes a rate in bit/s, e.g. fixed:800000 or fixed:800k"
        )
    if text.lower().startswith("onnx:"):
        path = text[len("onnx:") :].strip()
        if not path:
            raise ConfigurationError(f"estimator {spec!r}: onnx needs a model path")
        from .onnx import OnnxEstimator

        try:
            OnnxEstimator.check_model(path)
        except ConfigurationError as exc:
            raise ConfigurationError(f"estimator {spec!r}: {exc}") from None
        return lambda: OnnxEstimator(path)
    module_part, sep, name = text.rpartition(":")
    if not sep or not module_part or not name:
        raise ConfigurationError(
            f'estimator {spec!r}: expected "package.module:Class" or "path/file.py:Class"'
        )
    if not _NAME.fullmatch(name):
        raise ConfigurationError(f"estimator {spec!r}: {name!r} is not a class name")
    module = _load_module(module_part, spec)
    target = getattr(module, name, None)
    if target is None:
        raise ConfigurationError(
            f"estimator {spec!r}: module {module.__name__!r} has no attribute {name!r}"
        )
    if isinstance(target, type):
        return _from_class(target, f"estimator {spec!r}")
    raise ConfigurationError(f"estimator {spec!r}: {name!r} is not a class, got {target!r}")


def _load_module(module_part: str, spec: str) -> Any:
    if module_part.endswith(".py"):
        path = Path(module_part).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"estimator {spec!r}: no file {str(path)!r}")
        # One module per file (by its resolved path), so the same file loads once.
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        name = f"webrtclab_estimator_{path.stem}_{digest}"
        if name in sys.modules:
            return sys.modules[name]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ConfigurationError(f"estimator {spec!r}: cannot load {str(path)!r}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ConfigurationError(
                f"estimator {spec!r}: importing {str(path)!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return module
    if not _MODULE.fullmatch(module_part):
        raise ConfigurationError(
            f"estimator {spec!r}: {module_part!r} is neither a module name nor a .py file"
        )
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"estimator {spec!r}: no module {exc.name!r} (is it on sys.path?)"
        ) from exc
    except Exception as exc:
        raise ConfigurationError(
            f"estimator {spec!r}: importing {module_part!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
