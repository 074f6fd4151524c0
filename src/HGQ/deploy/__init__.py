"""What a model deploys as, independent of the emitter that writes it.

Between the layers (what trains) and the two emitters (``HGQ.hls4ml_hook``, which
writes hls4ml layer dictionaries, and ``HGQ.rtl``, which traces alkaid circuits):
each layer's inference arithmetic as steps over named tensors (``descriptions``,
in the vocabulary of ``steps``; ``register_deployment`` adds a user's layer), the
flat functional graph of any HGQ model (``flat_graph``), the deployed rounding of a
quantizer (``formats``) and the contents of every lookup table (``tables``).
Nothing here imports an emitter.
"""

from HGQ.deploy import steps
from HGQ.deploy.descriptions import Tensors, describe, register_deployment

__all__ = ["Tensors", "describe", "register_deployment", "steps"]
