"""One batch bound to a session's device: ``BoundRun`` copies the inputs there once and leaves
the outputs there, so each ``run()`` is the model alone, with no host round trip (what a GPU
benchmark or a server holding device tensors wants); ``outputs()`` copies them to the host.

::

    bound = session.bind(feeds)      # inputs -> device (once)
    bound.run()                      # run_with_iobinding: device in, device out
    bound.outputs()["logits"]        # device -> host, when wanted

On the CPU provider the device is the host, and the same calls run (that is how it is tested
without a GPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .providers import CUDA, import_onnxruntime


class BoundRun:
    """``feeds`` (already the model's inputs and dtypes) bound to ``session``'s device."""

    def __init__(self, session: Any, feeds: dict[str, np.ndarray], output_names: list[str]):
        ort = import_onnxruntime()
        self.session = session
        self.device = "cuda" if CUDA in session.get_providers() else "cpu"
        self.output_names = list(output_names)
        self.binding = session.io_binding()
        self._inputs = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), self.device, 0)
                        for name, value in feeds.items()}     # held here: the binding only points at them
        for name, value in self._inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            self.binding.bind_output(name, self.device)

    def run(self) -> None:
        """One run on the bound inputs; the outputs stay on the device."""
        self.session.run_with_iobinding(self.binding)

    def outputs(self) -> dict[str, np.ndarray]:
        """The last run's outputs, copied to the host."""
        return dict(zip(self.output_names, self.binding.copy_outputs_to_cpu()))
