"""HGQ layers in alkaid's own Keras tracer: ``alkaid convert model.keras out``.

alkaid's command line reads a ``.keras`` file and traces it layer by layer; for a
layer class it does not know it loads the entry point named after the class's top
package from the group ``alkaid_keras`` (``HGQ``, declared in pyproject.toml), which
calls ``register``. That registers one replay for every HGQ layer class: it runs the
layer's deployment steps (``HGQ.deploy``) with the same rules as ``convert_to_rtl``,
so the circuit is the one ``convert_to_rtl`` builds.

As in ``convert_to_rtl``, the firmware takes each model input in the formats of the
HQuantize or Signature it feeds: give ``alkaid convert`` inputs already in those
formats (``--inputs-kif``), or its own check feeds it values the firmware never sees.
The model must be calibrated (``compute_bops``) before it is saved.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _flat_inputs(args: tuple[Any, ...]) -> list[Any]:
    flat: list[Any] = []
    for arg in args:
        if isinstance(arg, (list, tuple)):
            flat.extend(_flat_inputs(tuple(arg)))
        elif arg is not None:
            flat.append(arg)
    return flat


def _replay(layer: Any, *args: Any, **kwargs: Any) -> Any:
    """``layer``'s steps on alkaid's arrays (batch axis of 1 on entry and exit)."""
    from alkaid.trace import FVArrayInput

    from HGQ.deploy.descriptions import Tensors, describe
    from HGQ.rtl.step_rules import quantize_elements, run_steps

    inputs = []
    for x in _flat_inputs(args):
        x = x[0]
        if isinstance(x, FVArrayInput):
            # A model input: the port holds the reading layer's formats (the host
            # quantizes), as in convert_to_rtl.
            kif = [np.broadcast_to(a, x.shape) for a in layer.exact_output_format()]
            x = quantize_elements(x, kif, "WRAP", "TRN")
        inputs.append(x)
    names = [f"in{n}" for n in range(len(inputs))]
    output_shape = tuple(int(d) for d in layer.output.shape[1:])
    tensors = Tensors(tuple(names), tuple(x.shape for x in inputs), "out", output_shape)
    values = dict(zip(names, inputs, strict=True))
    run_steps(describe(layer, tensors), values)
    return values["out"][None]


def register() -> None:
    """Register the replay of every HGQ layer class with alkaid's Keras tracer."""
    from alkaid.converter.builtin.keras.layers._base import ReplayOperationBase

    from HGQ.deploy.descriptions import registered_classes

    def with_subclasses(cls: type) -> list[type]:
        found = [cls]
        for child in cls.__subclasses__():
            found.extend(with_subclasses(child))
        return found

    classes = {c for cls in registered_classes() for c in with_subclasses(cls)}
    type(
        "HGQReplay",
        (ReplayOperationBase,),
        {
            "handles": tuple(sorted(classes, key=lambda c: c.__qualname__)),
            "__activation_handled__": True,
            "call": lambda self, *args, **kwargs: _replay(self.op, *args, **kwargs),
        },
    )
