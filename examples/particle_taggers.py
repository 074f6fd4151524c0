"""Jet taggers over particles: a Deep Sets and an MLP-Mixer, trained, costed and deployed.

Both read each jet as a ``(particles, features)`` array and are invariant to the
order of the particles:

- **Deep Sets**: the same small MLP on every particle (``HDense`` on the particle
  axis), an average over the particles (``PGlobalAvgPool1D``), then a classifier.
- **MLP-Mixer**: an embedding per particle, a token-mixing layer (``HEinsumDense``
  over the particle axis, ``'abc,bd->adc'``) and a channel-mixing ``HDense``, each
  with a residual ``HAdd``, an average over the particles, then a classifier. Token mixing
  is not invariant by itself; the average after it makes the model depend on the
  particles' order only through what it learns.

Each model is trained with an EBOPs penalty (``--beta``), calibrated with
``compute_bops`` (the exact hardware cost), evaluated, converted with hls4ml, and its
C simulation compared with Keras on every output of the test set and of inputs far
outside the calibrated range.

Run it with::

    KERAS_BACKEND=jax .venv/bin/python examples/particle_taggers.py \\
        [--model deepsets|mixer] [--data jets.npz] [--epochs 30]

Without ``--data`` the jets are the toy set of ``HGQ.particle_data`` (one, two or three
prongs, 16 particles of pT fraction, Δη, Δφ). Real constituent data go in an ``.npz``
with ``x`` of shape ``(jets, particles, features)`` and ``y`` one integer class per jet
(for the hls4ml LHC jet data set's constituent lists: the particles' features, padded
or cut to a power-of-two number of particles, so that the average is a shift).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence

import numpy as np

# isort: off
import HGQ  # noqa: F401  (selects the Keras backend: must precede keras)
import keras

# isort: on
from HGQ import HAdd, HDense, HEinsumDense, HQuantize, PGlobalAvgPool1D
from HGQ.bops import ResetMinMax, compute_bops
from HGQ.hls4ml_hook import convert_from_hgq_model
from HGQ.particle_data import load_particle_jets, toy_particle_jets

#: Inputs start with 8 fractional bits: pT fractions of 1/16 and angles spread by 0.05
#: vanish on the default 2-bit grid before training can widen it.
INPUT_BITS = {"pre_activation_quantizer_config": {"init_bw": 8}}


def deep_sets(
    particles: int, features: int, classes: int, beta: float, width: int = 16
) -> keras.Model:
    """phi (two HDense on every particle) -> average over particles -> rho (two HDense)."""
    return keras.Sequential(
        [
            keras.Input((particles, features)),
            HQuantize(name="inp_q", bops_reg_factor=beta, **INPUT_BITS),
            HDense(width, activation="relu", bops_reg_factor=beta, name="phi_1"),
            HDense(width, activation="relu", bops_reg_factor=beta, name="phi_2"),
            PGlobalAvgPool1D(name="average"),
            HDense(width, activation="relu", bops_reg_factor=beta, name="rho_1"),
            HDense(classes, bops_reg_factor=beta, name="logits"),
        ],
        name="deep_sets",
    )


#: The Mixer's activations train on the grid they are deployed on (``exact_q_value``):
#: with the default (fractional bits not rounded while training) it reached 1.0 on the
#: training jets in training mode and 0.52 in inference mode on the same jets.
ROUNDED = {"exact_q_value": True}


def mlp_mixer(
    particles: int, features: int, classes: int, beta: float, width: int = 16
) -> keras.Model:
    """Embedding -> token mixing + residual -> channel mixing + residual -> average."""

    def h(**kwargs) -> dict:
        return {"bops_reg_factor": beta, "pre_activation_quantizer_config": ROUNDED, **kwargs}

    inputs = keras.Input((particles, features))
    input_config = {**INPUT_BITS["pre_activation_quantizer_config"], **ROUNDED}
    x = HQuantize(**h(name="inp_q", pre_activation_quantizer_config=input_config))(inputs)
    x = HDense(width, **h(activation="relu", name="embed"))(x)
    tokens = HEinsumDense(
        "abc,bd->adc", (particles, width), **h(activation="relu", bias_axes="d", name="tokens")
    )(x)
    x = HAdd(**h(name="token_residual"))([x, tokens])
    channels = HDense(width, **h(activation="relu", name="channels"))(x)
    x = HAdd(**h(name="channel_residual"))([x, channels])
    x = PGlobalAvgPool1D(name="average")(x)
    outputs = HDense(classes, **h(name="logits"))(x)
    return keras.Model(inputs, outputs, name="mlp_mixer")


MODELS = {"deepsets": deep_sets, "mixer": mlp_mixer}


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


def train(
    model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int = 128
) -> None:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[ResetMinMax()])


def bit_exact_counts(model: keras.Model, x: np.ndarray, output_dir: str) -> dict[str, tuple]:
    """Convert, compile the C simulation; (equal, total) outputs on ``x`` and far outside."""
    model_hls = convert_from_hgq_model(model, output_dir)
    model_hls.compile()
    rng = np.random.default_rng(0)
    far = (x * 8 + rng.normal(scale=4, size=x.shape)).astype("float32")
    counts = {}
    for label, data in (("test set", x), ("far outside the calibrated range", far)):
        expected = model.predict(data, verbose=0)
        got = np.asarray(model_hls.predict(np.ascontiguousarray(data))).reshape(expected.shape)
        counts[label] = (int(np.sum(got == expected)), expected.size)
    return counts


def run(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    beta: float,
    output_dir: str,
    convert: bool = True,
) -> dict:
    """Train model ``name`` on 80% of the jets; accuracy, EBOPs and exactness on the rest."""
    split = int(0.8 * len(x))
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    classes = int(max(y.max() + 1, 2))
    model = MODELS[name](x.shape[1], x.shape[2], classes, beta)
    train(model, x_train, y_train, epochs)
    ebops = compute_bops(model, x_train, verbose=False)
    result = {"model": model, "accuracy": accuracy(model, x_test, y_test), "ebops": ebops}
    if convert:
        result["bit_exact"] = bit_exact_counts(model, x_test, os.path.join(output_dir, name))
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="deepsets")
    parser.add_argument("--data", help=".npz with x (jets, particles, features) and y")
    parser.add_argument("--jets", type=int, default=6000, help="toy jets when no --data")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--beta", type=float, default=1e-5, help="EBOPs penalty β")
    parser.add_argument("--output-dir", default=None, help="hls4ml projects (default: temp)")
    parser.add_argument("--no-convert", action="store_true", help="skip hls4ml")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    if args.data:
        x, y = load_particle_jets(args.data)
    else:
        x, y = toy_particle_jets(args.jets)
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="hgq_particles_")
    result = run(args.model, x, y, args.epochs, args.beta, output_dir, not args.no_convert)
    print(f"{args.model}: {x.shape[1]} particles x {x.shape[2]} features, {len(x)} jets")
    print(f"test accuracy {result['accuracy']:.4f} at {result['ebops']:,.0f} EBOPs")
    for label, (equal, total) in result.get("bit_exact", {}).items():
        print(f"bit-exact: {equal}/{total} outputs ({label})")


if __name__ == "__main__":
    main()
