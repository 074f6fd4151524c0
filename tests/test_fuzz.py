"""Random architectures must convert bit-exactly, or be refused with HGQ's own error.

The generator (``fuzz_models``) draws small models from the public layers with
random quantizer configs (inner quantizers, global defaults and dtype policies too);
each case trains, calibrates, deploys on both paths (hls4ml C simulation, and
``HGQ.rtl``'s interpreter, with verilator for one seed in five) and compares every
output exactly on in-range, far out-of-range, half-LSB-tie and zero inputs, plus a
``.keras`` round trip. One fixed seed runs by default, twelve more are marked slow
(a regression sample: ``bench/fuzz.py`` runs hundreds of other seeds). Re-run a failing seed with
``python bench/fuzz.py --case SEED``. The benchmark's own runs use other seeds
(1000 and up), so these stay an independent sample.
"""

from __future__ import annotations

from collections import Counter

import fuzz_models as fm
import pytest

DEFAULT_SEEDS = (2,)
SLOW_SEEDS = (1, 3, *range(100, 110))
SELF_TEST_SEEDS = range(500, 540)


def _check_case(seed: int) -> None:
    pytest.importorskip("hls4ml")
    result = fm.run_case(seed)
    # 'warned': the conversion said this layer's arithmetic is wider than float32 can
    # emulate (SPEC section 7); any other difference or crash is a bug.
    assert result.outcome in ("exact", "refused", "warned"), (
        f"{result.summary()}\n{result.traceback}\nre-run: python bench/fuzz.py --case {seed}"
    )
    # The RTL path (alkaid's interpreter; verilator for one seed in five) on the same model.
    assert result.rtl_outcome in ("exact", "refused", "warned", "skipped"), (
        f"{result.summary()}\n{result.traceback}\nre-run: python bench/fuzz.py --case {seed}"
    )


@pytest.mark.parametrize("seed", DEFAULT_SEEDS)
def test_random_model_is_exact_or_refused(seed):
    _check_case(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_random_model_is_exact_or_refused_many(seed):
    _check_case(seed)


@pytest.mark.slow
def test_generator_covers_every_layer_and_structure():
    """Without compiling anything: the generator really draws every public layer kind
    and every structure (several inputs/outputs, fan-out, Sequential, zero widths, ...),
    so the conversion tests above sample the whole space, not a corner of it."""
    seen: Counter[str] = Counter()
    for seed in SELF_TEST_SEEDS:
        case = fm.generate_case(seed)
        seen.update(case.features)
        assert len(case.x) == len(case.model.inputs)
        assert len(case.y) == len(case.model.outputs)
        assert len(case.front_layers) == len(case.model.inputs)
    missing_layers = {cls.__name__ for cls in fm.LAYER_CLASSES} - set(seen)
    missing_structures = set(fm.STRUCTURE_FEATURES) - set(seen)
    assert not missing_layers, f"never generated: {sorted(missing_layers)}"
    assert not missing_structures, f"never generated: {sorted(missing_structures)}"
    assert seen["multi_input"] >= 5 and seen["multi_output"] >= 5 and seen["fan_out"] >= 5


def test_generation_is_deterministic():
    """A seed must name one model, or ``--case SEED`` would not reproduce a failure."""
    first, second = fm.generate_case(7), fm.generate_case(7)
    assert [layer.get_config() for layer in first.model.layers] == [
        layer.get_config() for layer in second.model.layers
    ]
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        assert (a == b).all()
    for a, b in zip(first.x, second.x, strict=True):
        assert (a == b).all()
