"""A session as a PyTorch project: ``model.py`` (one readable ``torch.nn.Module`` written layer by
layer from the spec), ``weights.safetensors``, ``input.safetensors`` and a ``README.md``, in a zip.

``python model.py`` needs only ``torch`` and ``safetensors``: it loads the weights and the input
beside it, runs the network and prints one JSON line ``{"loss": ..., "prediction": [...]}``, the
same numbers as this engine's trace of that input. The code is generated as text from the
engine's normalized spec; nothing here imports PyTorch.

How each engine convention maps onto PyTorch:
- conv ``W`` (F, C, HH, WW) and dense ``W`` (units, in_features) are already PyTorch's
  ``Conv2d.weight`` and ``Linear.weight``; flatten is C, H, W order in both.
- ``padding_mode: "circular"`` is ``Conv2d(padding_mode="circular")``; ``operation:
  "convolution"`` (the kernel rotated 180°) is the generated ``TrueConv2d``, which flips the
  stored kernel in its forward pass, so the weights file holds the engine's arrays unchanged.
- the losses are the engine's: cross_entropy is ``F.cross_entropy`` on the logits (mean over
  the batch); binary_cross_entropy and mse sum over the outputs and average over the batch.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from app.sessions import Session, TracedInput
from app.tensor_file import encode_safetensors

ACTIVATIONS = {
    "relu": "torch.relu({})",
    "leaky_relu": "F.leaky_relu({}, negative_slope=0.01)",
    "sigmoid": "torch.sigmoid({})",
    "tanh": "torch.tanh({})",
    "identity": "{}",
    "softmax": "torch.softmax({}, dim=1)",
}

LOSSES = {
    "cross_entropy": (
        "L = -(1/N) sum_n log softmax(z)[n, y_n], computed from the logits",
        "return F.cross_entropy(z, target)"),
    "binary_cross_entropy": (
        "L = -(1/N) sum_n sum_k [y log a + (1 - y) log(1 - a)], a = sigmoid(z), from the logits",
        "return F.binary_cross_entropy_with_logits(z, target, reduction=\"sum\") / z.shape[0]"),
    "mse": (
        "L = (1/N) sum_n 1/2 sum_k (a - y)^2",
        "return 0.5 * ((Network.output(z) - target) ** 2).sum() / z.shape[0]"),
}

TRUE_CONV = '''

class TrueConv2d(nn.Conv2d):
    """Convolution as the notes define it: the kernel is rotated 180 degrees, then PyTorch's
    cross-correlation runs, z[i, j] = b + sum_{r,q} x_pad[i*s + r, j*s + q] * W[HH-1-r, WW-1-q].
    The weight is stored unrotated, exactly as the visualizer holds it."""

    def forward(self, x):
        return self._conv_forward(x, torch.flip(self.weight, dims=(2, 3)), self.bias)
'''


def _pair(value: Any) -> str:
    h, w = value
    return f"({h}, {w})"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _layer_module(layer: dict[str, Any], in_shape: tuple[int, ...]) -> str:
    kind = layer["type"]
    if kind == "conv":
        cls = "TrueConv2d" if layer.get("operation", "cross_correlation") == "convolution" \
            else "nn.Conv2d"
        options = (f"kernel_size={_pair(layer['kernel'])}, stride={_pair(layer['stride'])}, "
                   f"padding={_pair(layer['padding'])}")
        if layer.get("padding_mode", "zeros") != "zeros":
            options += f", padding_mode={layer['padding_mode']!r}"
        return f"{cls}({in_shape[0]}, {layer['filters']}, {options})"
    if kind == "maxpool":
        return f"nn.MaxPool2d(kernel_size={_pair(layer['size'])}, stride={_pair(layer['stride'])})"
    if kind == "avgpool":
        return f"nn.AvgPool2d(kernel_size={_pair(layer['size'])}, stride={_pair(layer['stride'])})"
    if kind == "flatten":
        return "nn.Flatten()"
    if kind == "dense":
        return f"nn.Linear({in_shape[0]}, {layer['units']})"
    raise ValueError(f"no PyTorch module for layer type {kind!r}")


def model_source(spec: dict[str, Any], names: list[str],
                 layer_shapes: list[tuple[tuple[int, ...], tuple[int, ...]]], *,
                 title: str) -> str:
    """The text of ``model.py`` for a network with this normalized spec."""
    layers = spec["layers"]
    modules, steps = [], []
    for position, (layer, name, (in_shape, out_shape)) in enumerate(
            zip(layers, names, layer_shapes)):
        what = f"{name}: {_shape(in_shape)} -> {_shape(out_shape)}"
        modules.append(f"        self.{name} = {_layer_module(layer, in_shape)}  # {what}")
        call = f"self.{name}(x)"
        if position == len(layers) - 1:
            steps.append(f"        return {call}  # z of {name}, the last layer")
        else:
            activation = layer.get("activation", "identity") if layer["type"] in (
                "conv", "dense") else "identity"
            steps.append(f"        x = {ACTIVATIONS[activation].format(call)}")
    last_activation = layers[-1].get("activation", "identity") if layers[-1]["type"] in (
        "conv", "dense") else "identity"
    loss_formula, loss_line = LOSSES[spec["loss"]]
    uses_true_conv = any(layer["type"] == "conv" and layer.get("operation") == "convolution"
                         for layer in layers)
    dtype = "torch.float64" if spec.get("dtype") == "float64" else "torch.float32"
    input_shape = tuple(spec["input_shape"])
    return f'''"""{title}

Exported from the CNN backprop visualizer. Run `python model.py` next to weights.safetensors and
input.safetensors: it prints {{"loss": ..., "prediction": [...]}} for the saved input, the same
numbers the visualizer showed. Needs only torch and safetensors (pip install torch safetensors).

Input: N x {_shape(input_shape)}. Loss: {spec["loss"]}.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

HERE = Path(__file__).resolve().parent
DTYPE = {dtype}
{TRUE_CONV if uses_true_conv else ""}

class Network(nn.Module):
    def __init__(self):
        super().__init__()
{chr(10).join(modules)}

    def forward(self, x):
        """x: (N, {", ".join(str(d) for d in input_shape)}) -> the last layer's pre-activation z."""
{chr(10).join(steps)}

    @staticmethod
    def output(z):
        """The last layer's activation: the network's prediction."""
        return {ACTIVATIONS[last_activation].format("z")}


def loss_fn(z, target):
    """{loss_formula}."""
    {loss_line}


def main():
    model = Network().to(DTYPE)
    model.load_state_dict(load_file(str(HERE / "weights.safetensors")))
    sample = load_file(str(HERE / "input.safetensors"))
    with torch.no_grad():
        z = model(sample["input"])
        loss = loss_fn(z, sample["target"])
        prediction = Network.output(z)[0]
    print(json.dumps({{"loss": loss.item(), "prediction": prediction.tolist()}}))


if __name__ == "__main__":
    main()
'''


def weight_tensors(session: Session) -> dict[str, np.ndarray]:
    """The weights under the generated module's names (``conv1.weight``, ``dense1.bias``...)."""
    tensors = {}
    for name, layer in zip(session.network.names, session.network.params):
        if layer:
            tensors[f"{name}.weight"] = layer["W"]
            tensors[f"{name}.bias"] = layer["b"]
    return tensors


def input_tensors(session: Session, traced: TracedInput) -> dict[str, np.ndarray]:
    """``input`` (1, C, H, W) in the network's dtype and ``target`` as the loss wants it: the class
    (int64, shape (1,)) for cross_entropy, else the target vector (1, K) in the network's dtype."""
    dtype = session.network.dtype
    target = traced.target[None]
    target = target.astype(np.int64) if session.spec["loss"] == "cross_entropy" \
        else target.astype(dtype)
    return {"input": traced.x[None].astype(dtype), "target": target}


def _where(source: dict[str, Any]) -> str:
    if "dataset" in source:
        return f"MNIST {source['split']} digit #{source['index']}"
    if "example" in source:
        return f"the {source.get('preset')} preset's example {source['example']!r}"
    return "a drawn or uploaded image"


def readme(session: Session, traced: TracedInput, was_traced: bool) -> str:
    where = _where(traced.source)
    shows = f", the digit {traced.digit}" if traced.digit is not None else ""
    if was_traced:
        origin = (f"{where}, the input of the session's last trace (or the first sample of its "
                  "last step)")
    else:
        origin = (f"{where}: this session had not traced anything yet, so it is the sample its "
                  "next training step would trace first")
    return f"""# {session.preset or "custom"} network, step {session.step}

Exported from the CNN backprop visualizer.

| file | holds |
| --- | --- |
| `model.py` | the network as one `torch.nn.Module`, written layer by layer from its spec |
| `weights.safetensors` | its weights at step {session.step} (`<layer>.weight`, `<layer>.bias`) |
| `input.safetensors` | `input` (1×{"×".join(map(str, traced.x.shape))}) and `target` ({json.dumps(traced.target.tolist())}){shows} |
| `README.md` | this file |

The input is {origin}.

```sh
pip install torch safetensors
python model.py
```

prints one JSON line `{{"loss": ..., "prediction": [...]}}`: the loss and the network's output for
that input, equal to what the visualizer computed (to float32 rounding). From here the model is
ordinary PyTorch: `Network()`, `model.load_state_dict(load_file("weights.safetensors"))`, and
train it with any `torch.optim` optimizer and `loss_fn`.

The spec it was built from:

```json
{_spec_text(session.spec)}
```
"""


def _spec_text(spec: dict[str, Any]) -> str:
    """The spec as JSON with one layer per line."""
    rest = {key: value for key, value in spec.items() if key != "layers"}
    layers = ",\n".join(f"    {json.dumps(layer)}" for layer in spec["layers"])
    return f"{json.dumps(rest)[:-1]},\n  \"layers\": [\n{layers}\n  ]}}"


def export_zip(session: Session, traced: TracedInput, was_traced: bool) -> bytes:
    """The zip: ``model.py``, ``weights.safetensors``, ``input.safetensors``, ``README.md``."""
    network = session.network
    title = (f"The {session.preset} network" if session.preset else "A custom network") + \
        f" at training step {session.step}."
    metadata = {"digit": json.dumps(traced.digit), "source": json.dumps(traced.source),
                "traced": json.dumps(was_traced)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.py", model_source(network.spec, network.names,
                                                   network.layer_shapes, title=title))
        archive.writestr("weights.safetensors", encode_safetensors(weight_tensors(session)))
        archive.writestr("input.safetensors",
                         encode_safetensors(input_tensors(session, traced), metadata))
        archive.writestr("README.md", readme(session, traced, was_traced))
    return buffer.getvalue()
