"""How many kernel instances a layer's firmware builds: ``parallel_factor``.

A kernel applied at several positions (a convolution's output positions, every
particle of an ``HDense`` on ``(particles, features)``, the tokens of an
``HEinsumDense``) is built once per position in a fully parallel design (``HGQ.rtl``
always; hls4ml ``io_parallel`` with the full ``ParallelizationFactor``, the norm for
sub-microsecond triggers), or fewer times and reused over the positions in turn.
EBOPs price ``parallel_factor`` instances: the layer's EBOPs summed over all positions,
times ``parallel_factor / positions``. ``None``, the default, means one instance per
position (``parallel_factor = positions``).

Files saved before the default became ``None`` recorded ``parallel_factor=1``; a
configuration without the key is read as 1, the old default, so such models keep the
price they were trained with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: What a configuration without ``parallel_factor`` was saved with (the old default).
LEGACY_PARALLEL_FACTOR = 1


def check_parallel_factor(value: Any, owner: str) -> int | None:
    """``parallel_factor`` as None or an int >= 1, or a ValueError naming ``owner``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"{owner}: parallel_factor must be None (fully parallel: one kernel instance per "
            f"position, the default) or an int >= 1 (instances built and reused over the "
            f"positions), got {value!r}."
        )
    return int(value)


class ParallelFactorMixin:
    """``parallel_factor`` and ``positions`` for a layer whose kernel is applied at
    several positions. The host calls ``init_parallel_factor`` in ``__init__`` and
    ``set_positions`` in ``build``, and records ``parallel_factor_config`` in its
    configuration."""

    positions: int = 1

    def init_parallel_factor(self, value: Any) -> None:
        self._parallel_factor = check_parallel_factor(value, type(self).__name__)

    @property
    def parallel_factor(self) -> int | None:
        """Kernel instances built: the requested number, or ``positions`` when None (the
        default). Before ``build`` the positions are unknown, and None stays None."""
        if self._parallel_factor is None:
            return self.positions if self.built else None
        return self._parallel_factor

    @parallel_factor.setter
    def parallel_factor(self, value: Any) -> None:
        value = check_parallel_factor(value, f"{type(self).__name__} '{self.name}'")
        if self.built and value is not None:
            self._check_fits(value, self.positions)
        self._parallel_factor = value

    @property
    def parallel_factor_config(self) -> int | None:
        """What ``get_config`` records: None (fully parallel, whatever the shape) or
        the int asked for."""
        return self._parallel_factor

    @property
    def is_fully_parallel(self) -> bool:
        return self.parallel_factor == self.positions

    def _check_fits(self, factor: int, positions: int, where: str = "") -> None:
        if factor > positions:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': parallel_factor={factor} exceeds the "
                f"{positions} position(s) its kernel is applied to{where}; use a value "
                f"between 1 and {positions}, or None for one instance per position."
            )

    def set_positions(self, positions: int, where: str = "") -> None:
        """Fix the positions at build; ``where`` says which shape gave them."""
        positions = int(positions)
        if self._parallel_factor is not None:
            self._check_fits(self._parallel_factor, positions, where)
        self.positions = positions

    @property
    def bops_scale(self) -> float:
        """Kernel instances over positions: the share of the summed EBOPs deployed."""
        return self.parallel_factor / self.positions

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """A configuration without ``parallel_factor`` predates the key: the old default."""
        config = dict(config)
        config.setdefault("parallel_factor", LEGACY_PARALLEL_FACTOR)
        return super().from_config(config)


def layers_with_parallel_factor(model: Any) -> list[ParallelFactorMixin]:
    """Every built layer of ``model`` (nested ones and parts too) that has a factor."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, ParallelFactorMixin) and layer.built
    ]


def price_mismatch(layer: ParallelFactorMixin, builder: str, built: int) -> str | None:
    """The warning for a layer priced for other kernel instances than ``builder``
    builds (``built`` of them), or None when the price is what is built."""
    priced = layer.parallel_factor
    if built == priced:
        return None
    return (
        f"{type(layer).__name__} '{layer.name}': its EBOPs price parallel_factor={priced} "
        f"kernel instance(s) for its {layer.positions} positions, but {builder} builds "
        f"{built}, so expect about {built / priced:.3g}x this layer's EBOPs in LUTs. Leave "
        "parallel_factor at None (one instance per position, the default) to price the "
        "fully parallel design, or set it to what is built."
    )
