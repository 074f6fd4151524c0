"""Saved by the library before parallel_factor defaulted to fully parallel (commit 6755544's
layers): a calibrated model whose kernels were priced with the old default, 1."""

import json
import sys

import keras
import numpy as np

from HGQ import HConv1D, HDense, HEinsumDense, HMultiHeadAttention, HQuantize, PFlatten
from HGQ.bops import compute_bops

keras.utils.set_random_seed(3)
inp = keras.Input((8, 3))
x = HQuantize(name="inp_q")(inp)
x = HConv1D(4, 3, activation="relu", name="conv")(x)
x = HDense(4, name="per_position")(x)
x = HEinsumDense("bpc,pq->bqc", (3, 4), name="token_mix")(x)
x = HMultiHeadAttention(2, 2, name="mha")(x, x)
x = PFlatten()(x)
out = HDense(3, name="head")(x)
model = keras.Model(inp, out)
rng = np.random.default_rng(0)
xs = rng.normal(size=(512, 8, 3)).astype("float32")
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(xs, rng.integers(0, 3, 512), epochs=2, verbose=0)
ebops = compute_bops(model, xs, verbose=False)
model.save(sys.argv[1] + "/old_default_factor.keras")
np.save(sys.argv[1] + "/old_default_factor_x.npy", xs[:64])
json.dump(
    {
        "ebops": float(ebops),
        "by_layer": {r.name: r.ebops for r in ebops.rows},
        "outputs": model.predict(xs[:64], verbose=0).tolist(),
    },
    open(sys.argv[1] + "/old_default_factor.json", "w"),
)
print(float(ebops))
