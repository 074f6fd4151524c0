"""Default quantizer configurations, and how a per-layer config is merged over them.

The defaults are those of the usage guide. They are module state on purpose: the
guide's ``set_default_*`` functions change what every layer created afterwards
gets, exactly like ``keras.config.set_floatx``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

QUANTIZER_KEYS = (
    "init_bw",
    "skip_dims",
    "rnd_strategy",
    "exact_q_value",
    "dtype",
    "bw_clip",
    "trainable",
    "regularizer",
    "minmax_record",
    "overflow_mode",
    "init_mode",
)

#: How a kernel's fractional bits start: ``init_bw`` everywhere, or ``init_bw``
#: significant bits for each weight (below its leading bit).
INIT_MODES = ("fixed", "magnitude")

#: What an activation does with a value outside its calibrated range (ap_fixed's names).
OVERFLOW_MODES = ("WRAP", "SAT", "SAT_SYM")

RND_STRATEGIES = (
    "floor",
    "standard_round",
    "stochastic_round",
    "fast_uniform_noise_injection",
    "auto",
)

SKIP_DIMS_NAMES = ("all", "batch", "none", "except_last", "except_1st")


def _guide_kernel_defaults() -> dict[str, Any]:
    return dict(
        init_bw=2,
        skip_dims=None,
        rnd_strategy="standard_round",
        exact_q_value=True,
        dtype=None,
        bw_clip=(-23, 23),
        trainable=True,
        regularizer=keras.regularizers.L1(1e-6),
        minmax_record=False,
        init_mode="fixed",
    )


def _guide_pre_activation_defaults() -> dict[str, Any]:
    return dict(
        init_bw=2,
        skip_dims=(0,),
        rnd_strategy="standard_round",
        exact_q_value=False,
        dtype=None,
        bw_clip=(-23, 23),
        trainable=True,
        regularizer=keras.regularizers.L1(1e-6),
        minmax_record=True,
        overflow_mode="WRAP",
    )


_defaults: dict[str, dict[str, Any]] = {
    "kernel": _guide_kernel_defaults(),
    "pre_activation": _guide_pre_activation_defaults(),
}


def is_finite_number(value: Any) -> bool:
    """A real, finite number (bool excluded): what numeric arguments like β accept."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and bool(np.isfinite(value))
    )


def validate_quantizer_config(config: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the bad key and the fix; never returns a partial result."""
    unknown = set(config) - set(QUANTIZER_KEYS)
    if unknown:
        raise ValueError(
            f"Unknown quantizer config key(s) {sorted(unknown)}. "
            f"Valid keys are {list(QUANTIZER_KEYS)}."
        )
    if "rnd_strategy" in config and config["rnd_strategy"] not in RND_STRATEGIES:
        raise ValueError(
            f"Unknown rnd_strategy {config['rnd_strategy']!r}. "
            f"Choose one of {list(RND_STRATEGIES)}."
        )
    if "skip_dims" in config:
        skip = config["skip_dims"]
        if isinstance(skip, str):
            if skip not in SKIP_DIMS_NAMES:
                raise ValueError(
                    f"Unknown skip_dims {skip!r}. Use a tuple of axes, None, "
                    f"or one of {list(SKIP_DIMS_NAMES)}."
                )
        elif skip is not None:
            try:
                axes = tuple(skip)
            except TypeError:
                raise ValueError(
                    f"skip_dims must be a tuple of ints, None or one of "
                    f"{list(SKIP_DIMS_NAMES)}; got {skip!r}."
                ) from None
            if not all(isinstance(a, int) for a in axes):
                raise ValueError(f"skip_dims must contain integer axes only; got {skip!r}.")
    if "bw_clip" in config:
        clip = config["bw_clip"]
        try:
            lo, hi = clip
        except (TypeError, ValueError):
            raise ValueError(f"bw_clip must be a pair (lo, hi); got {clip!r}.") from None
        if lo > hi:
            raise ValueError(
                f"bw_clip={tuple(clip)!r} has lo > hi. Give the lower bound first, "
                f"e.g. bw_clip=({hi}, {lo})."
            )
    if "overflow_mode" in config and config["overflow_mode"] not in OVERFLOW_MODES:
        raise ValueError(
            f"Unknown overflow_mode {config['overflow_mode']!r}. Choose one of "
            f"{list(OVERFLOW_MODES)} (WRAP wraps around like AP_WRAP, SAT clips to the "
            "format's range, SAT_SYM clips symmetrically)."
        )
    if "init_mode" in config and config["init_mode"] not in INIT_MODES:
        raise ValueError(
            f"Unknown init_mode {config['init_mode']!r}. Choose 'fixed' (every weight starts "
            "with init_bw fractional bits) or 'magnitude' (each weight starts with init_bw "
            "bits below its leading bit)."
        )
    if "init_bw" in config and not isinstance(config["init_bw"], (int, float)):
        raise ValueError(f"init_bw must be a number; got {config['init_bw']!r}.")


def _check_kernel_keys(config: Mapping[str, Any]) -> None:
    """Weights never overflow (their integer bits follow their values)."""
    if "overflow_mode" in config:
        raise ValueError(
            "overflow_mode applies to activations only: a weight's integer bits follow its "
            "value, so it never overflows. Put it in pre_activation_quantizer_config."
        )


def _check_activation_keys(config: Mapping[str, Any]) -> None:
    """An activation's values are unknown when it is built: no magnitude to start from."""
    if "init_mode" in config:
        raise ValueError(
            "init_mode applies to kernels only (it starts each weight's fractional bits from "
            "its magnitude); put it in kernel_quantizer_config."
        )


def _check_keys(kind: str, config: Mapping[str, Any]) -> None:
    if kind == "kernel":
        _check_kernel_keys(config)
    else:
        _check_activation_keys(config)


def check_config_mapping(config: Any, owner: str) -> None:
    """A quantizer config must be a dict of keys; anything else gets a named error."""
    if config is not None and not isinstance(config, Mapping):
        raise ValueError(
            f"{owner} must be a dict of quantizer settings (e.g. {{'init_bw': 4, "
            f"'bw_clip': (0, 8)}}; keys not given keep their default), got "
            f"{type(config).__name__} {config!r}."
        )


def _set_default(kind: str, config: Mapping[str, Any]) -> None:
    check_config_mapping(config, f"set_default_{kind}_quantizer_config: the config")
    validate_quantizer_config(config)
    _check_keys(kind, config)
    merged = dict(_defaults[kind])
    merged.update(config)
    _defaults[kind] = merged


def set_default_kernel_quantizer_config(config: Mapping[str, Any]) -> None:
    """Change the kernel quantizer defaults for layers created from now on.

    Keys not given keep their current default.
    """
    _set_default("kernel", config)


def set_default_pre_activation_quantizer_config(config: Mapping[str, Any]) -> None:
    """Change the pre-activation quantizer defaults for layers created from now on."""
    _set_default("pre_activation", config)


def get_default_kernel_quantizer_config() -> dict[str, Any]:
    """A copy of the current kernel quantizer defaults."""
    return copy.deepcopy(_defaults["kernel"])


def get_default_pre_activation_quantizer_config() -> dict[str, Any]:
    """A copy of the current pre-activation quantizer defaults."""
    return copy.deepcopy(_defaults["pre_activation"])


def reset_default_quantizer_configs() -> None:
    """Restore the usage guide's defaults (used by tests and notebooks)."""
    _defaults["kernel"] = _guide_kernel_defaults()
    _defaults["pre_activation"] = _guide_pre_activation_defaults()


def merged_config(kind: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The default config of ``kind`` with a partial per-layer dict merged over it."""
    overrides = dict(overrides or {})
    validate_quantizer_config(overrides)
    _check_keys(kind, overrides)
    config = copy.deepcopy(_defaults[kind])
    config.update(overrides)
    return config
