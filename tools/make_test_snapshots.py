#!/usr/bin/env python3
"""Make the small Hugging Face ViT snapshots under tests/data/snapshots, with transformers'
own outputs for them, so the import and forward pass are checked against an independent
implementation on shapes other than ViT-B/16: head sizes 24 and 80, patch 14 and 8, a
non-square 32x48 input, an MLP width that is not a multiple of 8, no qkv bias, F16 and BF16
weights, the legacy ViTFeatureExtractor config, bicubic resize with a centre crop.
CI never runs this; its outputs are committed.

    /tmp/train/bin/python tools/make_test_snapshots.py
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from transformers import DeiTImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
torch.manual_seed(7)
rng = np.random.default_rng(7)


def test_images():
    """A 97x61 RGB picture (smooth gradients plus noise) and a grey+alpha one."""
    yy, xx = np.mgrid[0:61, 0:97]
    rgb = np.stack([xx * 255 / 96, yy * 255 / 60, 128 + 100 * np.sin(xx / 7.0) * np.cos(yy / 5.0)], -1)
    rgb = np.clip(rgb + rng.normal(0, 20, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(os.path.join(HERE, "pattern-rgb.png"))
    la = np.stack([rgb[..., 0], (xx * 2 % 256).astype(np.uint8)], -1)
    Image.fromarray(la, "LA").save(os.path.join(HERE, "pattern-la.png"))
    return {"rgb": Image.open(os.path.join(HERE, "pattern-rgb.png")), "la": Image.open(os.path.join(HERE, "pattern-la.png"))}


def make(name, config, dtype, preproc_json, processor):
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            base = 1.0 if ("layernorm" in pname and pname.endswith("weight")) else 0.0
            p.copy_(base + 0.3 * torch.randn_like(p))
        # Round through the stored dtype so the reference sees exactly the weights on disk.
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    out = os.path.join(HERE, "snapshots", name)
    os.makedirs(out, exist_ok=True)
    # save_pretrained writes the hub's tensor names (transformers renames its modules inside).
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    model.float()
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump(preproc_json, f, indent=2)
    h, w = (config.image_size, config.image_size) if isinstance(config.image_size, int) else config.image_size
    ref = {"pixel_values": torch.randn(2, 3, h, w)}
    for key, img in images.items():
        ref[f"{key}_pixel_values"] = processor(images=img.convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        for key in [k for k in ref if k.endswith("pixel_values")]:
            ref[key.replace("pixel_values", "logits")] = model(pixel_values=ref[key]).logits
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(HERE, "snapshots", f"{name}.reference.safetensors"))
    print(name, {k: tuple(v.shape) for k, v in ref.items()})


images = test_images()

make(
    "head24-patch14-nobias-f16",
    ViTConfig(image_size=56, patch_size=14, num_channels=3, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=100, qkv_bias=False, hidden_act="gelu", layer_norm_eps=1e-12,
              id2label={i: f"class {i}" for i in range(7)}, label2id={f"class {i}": i for i in range(7)}),
    torch.float16,
    # The legacy form, as old hub snapshots have it.
    {"feature_extractor_type": "ViTFeatureExtractor", "do_resize": True, "size": 56, "resample": 2, "do_normalize": True,
     "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},
    ViTImageProcessor(size={"height": 56, "width": 56}, resample=2, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
)

make(
    "head80-rect-bicubic-crop-bf16",
    ViTConfig(image_size=(32, 48), patch_size=8, num_channels=3, hidden_size=80, num_hidden_layers=2, num_attention_heads=1,
              intermediate_size=37, qkv_bias=True, hidden_act="gelu_new", layer_norm_eps=1e-6,
              id2label={0: "left", 1: "middle", 2: "right"}, label2id={"left": 0, "middle": 1, "right": 2}),
    torch.bfloat16,
    {"image_processor_type": "DeiTImageProcessor", "do_resize": True, "size": {"height": 40, "width": 56}, "resample": 3,
     "do_center_crop": True, "crop_size": {"height": 32, "width": 48}, "do_rescale": True, "rescale_factor": 1 / 255,
     "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    DeiTImageProcessor(size={"height": 40, "width": 56}, resample=3, crop_size={"height": 32, "width": 48},
                       image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
)
