"""HMultiHeadAttention: ``keras.layers.MultiHeadAttention`` from quantized parts.

Every step is an HGQ layer with per-element formats: the query, key and value
projections and the output projection are ``HEinsumDense`` (Keras's equations), the
scores and the context are ``HEinsum`` (activation by activation), and the attention
weights come from ``HSoftmax``, so the whole block is the deployed arithmetic.

One difference from Keras: Keras scales the queries by ``1/sqrt(key_dim)``, which is
not a power of two and so not exact in fixed point. Here the query projection's
kernel starts scaled by that factor instead (the same function at initialisation) and
the training keeps whatever scale it learns.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from HGQ.layers._lineage import remember
from HGQ.layers.base import QLayerBase
from HGQ.layers.einsum import HEinsum
from HGQ.layers.einsum_dense import HEinsumDense
from HGQ.layers.parallelism import LEGACY_PARALLEL_FACTOR, check_parallel_factor
from HGQ.layers.softmax import HSoftmax


@keras.saving.register_keras_serializable(package="HGQ")
class HMultiHeadAttention(QLayerBase):
    """Multi-head attention, ``layer(query, value, key=None)`` on ``(batch, seq, dim)``.

    Arguments as Keras's: ``num_heads``, ``key_dim``, ``value_dim`` (default
    ``key_dim``), ``output_shape`` (default the query's last dimension), ``use_bias``.
    ``bops_reg_factor``, ``kernel_quantizer_config`` and
    ``pre_activation_quantizer_config`` go to every projection and product;
    ``softmax_config`` (a dict of HSoftmax keywords) to the softmax;
    ``parallel_factor`` to the four projections (None, the default: one kernel instance
    per sequence position, as the firmware builds them). The EBOPs are those of the
    parts (each an HGQ layer of its own inside this one). A configuration saved before
    ``parallel_factor`` existed loads with 1, the projections' old default.
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        value_dim: int | None = None,
        output_shape: int | None = None,
        use_bias: bool = True,
        kernel_quantizer_config: dict[str, Any] | None = None,
        pre_activation_quantizer_config: dict[str, Any] | None = None,
        softmax_config: dict[str, Any] | None = None,
        parallel_factor: int | None = None,
        **kwargs,
    ):
        """Args:
        num_heads: Attention heads.
        key_dim: Size of each head's queries and keys.
        value_dim: Size of each head's values (default ``key_dim``).
        output_shape: Output features (default the query's last dimension).
        use_bias: Whether the projections add biases.
        kernel_quantizer_config: Kernel quantizer settings of the projections.
        pre_activation_quantizer_config: Output quantizer settings of every part.
        softmax_config: HSoftmax keywords for the attention weights.
        parallel_factor: Kernel instances of each projection: None (the default) one
            per sequence position, an int that many, reused.
        """
        parallel_factor = check_parallel_factor(parallel_factor, type(self).__name__)
        super().__init__(**kwargs)
        self.parallel_factor = parallel_factor
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim) if value_dim is not None else self.key_dim
        self.output_dim = int(output_shape) if output_shape is not None else None
        self.use_bias = bool(use_bias)
        self.kernel_quantizer_config = kernel_quantizer_config
        self.pre_activation_quantizer_config = pre_activation_quantizer_config
        self.softmax_config = dict(softmax_config or {})

    # ------------------------------------------------------------- lineage
    def __call__(self, query, value, key=None, **kwargs):
        """Notes the three inputs' producers (the base notes only the first argument)."""
        key = value if key is None else key
        self._note_input_sources([query, value, key])
        outputs = keras.layers.Layer.__call__(self, query, value, key, **kwargs)
        remember(outputs, self)
        return outputs

    def _wire_projection_sources(self) -> None:
        """The projections read this layer's inputs, whose producers it noted."""
        refs = self._input_source_refs
        if refs is None:
            return
        projections = (self.query_dense, self.value_dense, self.key_dense)
        for projection, ref in zip(projections, refs, strict=True):
            object.__setattr__(projection, "_input_source_refs", (ref,))

    # ---------------------------------------------------------------- build
    def _part_kwargs(self, name: str) -> dict[str, Any]:
        return {
            "name": f"{self.name}_{name}",
            "bops_reg_factor": self.bops_reg_factor,
            "kernel_quantizer_config": self.kernel_quantizer_config,
            "pre_activation_quantizer_config": self.pre_activation_quantizer_config,
        }

    def build(self, query_shape, value_shape, key_shape=None) -> None:
        key_shape = value_shape if key_shape is None else key_shape
        if not (len(query_shape) == len(value_shape) == len(key_shape) == 3):
            raise ValueError(
                f"HMultiHeadAttention '{self.name}' takes (batch, sequence, features) inputs; "
                f"got query {tuple(query_shape)}, value {tuple(value_shape)}, key "
                f"{tuple(key_shape)}. PReshape other layouts first."
            )
        t, s = int(query_shape[1]), int(value_shape[1])
        h, dk, dv = self.num_heads, self.key_dim, self.value_dim
        out = self.output_dim or int(query_shape[-1])
        bias = "de" if self.use_bias else None

        def projection(name: str, length: int, dim: int) -> HEinsumDense:
            return HEinsumDense(
                "abc,cde->abde",
                (length, h, dim),
                bias_axes=bias,
                parallel_factor=self.parallel_factor,
                **self._part_kwargs(name),
            )

        self.query_dense = projection("query", t, dk)
        self.key_dense = projection("key", s, dk)
        self.value_dense = projection("value", s, dv)
        self.scores = HEinsum("aecd,abcd->acbe", **self._part_kwargs("scores"))
        self.softmax = HSoftmax(
            name=f"{self.name}_softmax", bops_reg_factor=self.bops_reg_factor, **self.softmax_config
        )
        self.context = HEinsum("acbe,aecd->abcd", **self._part_kwargs("context"))
        self.output_dense = HEinsumDense(
            "abcd,cde->abe",
            (t, out),
            bias_axes="e" if self.use_bias else None,
            parallel_factor=self.parallel_factor,
            **self._part_kwargs("attention_output"),
        )
        batch = query_shape[0]
        q_shape, k_shape = (batch, t, h, dk), (batch, s, h, dk)
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.value_dense.build(value_shape)
        self.scores.build([k_shape, q_shape])
        self.softmax.build((batch, h, t, s))
        self.context.build([(batch, h, t, s), (batch, s, h, dv)])
        self.output_dense.build((batch, t, h, dv))
        self._part_shapes = {
            "query": q_shape,
            "key": k_shape,
            "value": (batch, s, h, dv),
            "scores": (batch, h, t, s),
            "softmax": (batch, h, t, s),
            "context": (batch, t, h, dv),
            "attention_output": (batch, t, out),
        }
        # Keras scales the queries by 1/sqrt(key_dim); start the kernel so scaled.
        self.query_dense.kernel.assign(self.query_dense.kernel * (1.0 / math.sqrt(dk)))
        self.built = True

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        return tuple(query_shape[:-1]) + (self.output_dim or query_shape[-1],)

    def call(self, query, value, key=None, training=None):
        key = value if key is None else key
        self._wire_projection_sources()
        q = self.query_dense(query, training=training)
        k = self.key_dense(key, training=training)
        v = self.value_dense(value, training=training)
        scores = self.scores([k, q], training=training)  # (batch, heads, query, key)
        weights = self.softmax(scores, training=training)
        context = self.context([weights, v], training=training)  # (batch, query, heads, dv)
        return self.output_dense(context, training=training)

    # ------------------------------------------------- the output's bitwidths
    def output_bitwidth(self):
        return self.output_dense.output_bitwidth()

    def exact_output_bitwidth(self):
        return self.output_dense.exact_output_bitwidth()

    def output_varies(self):
        return self.output_dense.output_varies()

    def operand_bitwidth(self, varies=None):
        return self.output_dense.operand_bitwidth(varies)

    def exact_operand_bitwidth(self, varies=None):
        return self.output_dense.exact_operand_bitwidth(varies)

    def exact_output_varies(self):
        return self.output_dense.exact_output_varies()

    def exact_output_format(self):
        return self.output_dense.exact_output_format()

    def part_output_shapes(self) -> dict[QLayerBase, tuple[int | None, ...]]:
        """Each part and the shape of its output (batch axis first)."""
        names = {part.name: part for part in self.parts()}
        return {names[f"{self.name}_{name}"]: shape for name, shape in self._part_shapes.items()}

    def parts(self) -> list[QLayerBase]:
        """The HGQ layers inside, in the order they compute."""
        return [
            self.query_dense,
            self.key_dense,
            self.value_dense,
            self.scores,
            self.softmax,
            self.context,
            self.output_dense,
        ]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        kernel, activation = self.kernel_quantizer_config, self.pre_activation_quantizer_config
        softmax = self.softmax_config
        if self.built:
            # The parts merged the configs with the defaults in force when they were
            # built: record those, or a file loaded under other defaults computes
            # something else.
            part = self.query_dense.get_config()
            kernel = part["kernel_quantizer_config"]
            activation = part["pre_activation_quantizer_config"]
            merged = self.softmax.get_config()
            keys = (
                "exp_quantizer_config",
                "inv_quantizer_config",
                "pre_activation_quantizer_config",
            )
            softmax = {**softmax, **{key: merged[key] for key in keys}}
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            output_shape=self.output_dim,
            use_bias=self.use_bias,
            kernel_quantizer_config=kernel,
            pre_activation_quantizer_config=activation,
            softmax_config=softmax,
            parallel_factor=self.parallel_factor,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HMultiHeadAttention:
        """A configuration without ``parallel_factor`` predates it: the old default."""
        config = dict(config)
        config.setdefault("parallel_factor", LEGACY_PARALLEL_FACTOR)
        return super().from_config(config)
