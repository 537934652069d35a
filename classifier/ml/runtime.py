"""CPU inference runtimes for the frozen feature extractors.

``torch`` runs the extractor in PyTorch (eager, batch norm folded, ``channels_last``).
``openvino`` converts the same extractor once per process with OpenVINO and runs the compiled
graph (fused convolutions and activations): on the CPU it is the faster of the two, and it is
pinned to fp32 unless the engine chose bf16 (OpenVINO would otherwise pick bf16 by itself on
processors with AMX). ``auto`` is ``openvino`` on the CPU when the package is installed, else
``torch``. CUDA always runs in PyTorch.

The runtime is configuration (``CLASSIFIER_RUNTIME``), resolved here in one place. Both
runtimes compute the same function; ``tests/classifier_ml/test_ml_runtime.py`` pins that their
features and votes agree on real images.
"""

from __future__ import annotations

import importlib.util
import threading
import warnings

import numpy as np
import torch

RUNTIMES = ("auto", "torch", "openvino")


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_runtime(runtime: str | None, device: torch.device) -> str:
    """``auto`` -> ``openvino`` on the CPU when installed, else ``torch``. Asking for
    ``openvino`` where it cannot run is an error, never a silent switch."""
    runtime = (runtime or "auto").strip().lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "auto":
        return "openvino" if device.type == "cpu" and openvino_available() else "torch"
    if runtime == "openvino":
        if device.type != "cpu":
            raise ValueError("the openvino runtime runs on the CPU only; use runtime='torch' on CUDA")
        if not openvino_available():
            raise RuntimeError("runtime 'openvino' requested but the openvino package is not installed "
                               "(pip install -r requirements.txt)")
    return runtime


_CORE = None
_CORE_LOCK = threading.Lock()


def _core():
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov

            _CORE = ov.Core()
        return _CORE


def _to_openvino(module: torch.nn.Module, input_size: int, normalisation=None):
    """Trace the module and convert it with OpenVINO's PyTorch front end (dynamic batch).
    ``normalisation`` = (mean, std) on 0..1: the graph then takes the uint8 image batch and
    normalises it itself (fused into the first layer: about 8-10 % faster, same features).

    The front end is called directly rather than through ``openvino.convert_model``: that
    wrapper also sends usage statistics to its vendor unless a user opted out, and nothing
    in this product talks to outside servers."""
    import openvino as ov
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    example = torch.zeros(2, 3, input_size, input_size)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # the tracer is deprecated in favour of torch.export but works; OpenVINO's front end reads it
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=FutureWarning)
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
    decoder = TorchScriptPythonDecoder(traced)  # must outlive convert(): the front end calls back into it
    front_end = FrontEndManager().load_by_framework("pytorch")
    model = front_end.convert(front_end.load(decoder))
    model.reshape({0: ov.PartialShape([-1, 3, input_size, input_size])})
    if normalisation is not None:
        from openvino.preprocess import PrePostProcessor

        mean, std = normalisation
        ppp = PrePostProcessor(model)
        ppp.input(0).tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NCHW"))
        ppp.input(0).model().set_layout(ov.Layout("NCHW"))
        ppp.input(0).preprocess().convert_element_type(ov.Type.f32).mean([m * 255.0 for m in mean]) \
            .scale([s * 255.0 for s in std])
        model = ppp.build()
    return model


class OpenVINOExtractor:
    """A compiled OpenVINO copy of a :class:`~classifier.ml.features.FeatureExtractor`.

    Called like the extractor: a normalised float NCHW batch in, features out (torch tensors);
    with ``normalisation`` = (mean, std), the uint8 batch in instead (``takes_uint8``).
    ``precision`` is pinned (``fp32`` or ``bf16``). One infer request per thread."""

    is_openvino = True

    def __init__(self, extractor, input_size: int, *, precision: str = "fp32", threads: int | None = None,
                 normalisation=None):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"the openvino runtime runs fp32 or bf16, not {precision!r}")
        self.kind = extractor.kind
        self.precision = precision
        self.takes_uint8 = normalisation is not None
        config = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
                  "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = _core().compile_model(_to_openvino(extractor, input_size, normalisation), "CPU", config)
        self._local = threading.local()

    def _request(self):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_uint8:
            if x.dtype != torch.uint8:
                raise TypeError(f"this extractor normalises itself: it takes uint8 images, not {x.dtype}")
            arr = np.ascontiguousarray(x.cpu().numpy())
        else:
            arr = np.ascontiguousarray(x.detach().to(torch.float32).cpu().numpy())
        result = self._request().infer({0: arr})
        return torch.from_numpy(np.array(result[0], copy=True))


def compile_extractor(extractor, input_size: int, *, runtime: str, device: torch.device, precision: str,
                      threads: int | None = None, normalisation=None):
    """The extractor to call for inference: the torch module itself, or its OpenVINO copy
    (which, given the backbone's ``normalisation`` (mean, std), takes uint8 images:
    :func:`classifier.ml.features.extract_views` handles both)."""
    if resolve_runtime(runtime, device) != "openvino":
        return extractor
    if threads is None:
        threads = torch.get_num_threads()
    return OpenVINOExtractor(extractor, input_size, precision="bf16" if precision == "bf16" else "fp32",
                             threads=threads, normalisation=normalisation)
