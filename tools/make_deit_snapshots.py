#!/usr/bin/env python3
"""Make the small DeiT snapshots under tests/data/snapshots, with the outputs of transformers
and timm themselves, so that the import of each DeiT variant and its forward pass are checked
against the implementations users train with:

- Hugging Face DeiTForImageClassificationWithTeacher: distillation token, two heads averaged,
  head size 24, patch 14, no qkv bias, F16 weights, DeiTImageProcessor with its own sizes;
- Hugging Face DeiTForImageClassification: the distillation token is there but only the class
  token's head classifies; no preprocessor_config.json (DeiTImageProcessor's defaults apply);
- timm deit_*_distilled_*: `dist_token`, `head` and `head_dist`;
- timm deit3_*: layer scale (`ls1`/`ls2` gammas) and a position embedding over the patches
  only (no_embed_class);
- timm vit_* with global_pool="avg" and fc_norm.

Weights are random (normal, std 0.3; LayerNorm and layer-scale weights around 1), rounded
through the stored dtype so that the reference sees exactly the weights on disk. CI never
runs this; its outputs are committed.

    pip install torch transformers timm safetensors pillow
    python tools/make_deit_snapshots.py
"""
import json
import os

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from transformers import DeiTConfig, DeiTForImageClassification, DeiTForImageClassificationWithTeacher

try:  # transformers 5 names PIL's processor apart; its default one resizes with torchvision instead
    from transformers import DeiTImageProcessorPil as DeiTImageProcessor
except ImportError:  # transformers 4: the default processor is PIL's
    from transformers import DeiTImageProcessor

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
SNAPSHOTS = os.path.join(HERE, "snapshots")
torch.manual_seed(11)
IMAGES = {key: Image.open(os.path.join(HERE, f"pattern-{key}.png")) for key in ["rgb", "la"]}


def randomize(model, dtype):
    with torch.no_grad():
        for name, p in model.named_parameters():
            around_one = ("norm" in name and name.endswith("weight")) or name.endswith("gamma")
            p.copy_((1.0 if around_one else 0.0) + 0.3 * torch.randn_like(p))
            p.copy_(p.to(dtype).float())


def save_reference(name, model, size, preprocess, logits_of, random_inputs=2, pictures=("rgb", "la")):
    """Random inputs and the test pictures through `preprocess`, with the model's logits."""
    ref = {"pixel_values": torch.randn(random_inputs, 3, *size)} if random_inputs else {}
    for key, img in [(k, IMAGES[k]) for k in pictures]:
        ref[f"{key}_pixel_values"] = preprocess(img.convert("RGB"))
    with torch.no_grad():
        for key in [k for k in ref if k.endswith("pixel_values")]:
            ref[key.replace("pixel_values", "logits")] = logits_of(ref[key])
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(SNAPSHOTS, f"{name}.reference.safetensors"))
    print(name, {k: tuple(v.shape) for k, v in ref.items()})


def hf(name, model_class, config, dtype, preproc_json, processor, **reference):
    model = model_class(config).eval()
    randomize(model, dtype)
    out = os.path.join(SNAPSHOTS, name)
    os.makedirs(out, exist_ok=True)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    model.float()
    if preproc_json is not None:
        with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
            json.dump(preproc_json, f, indent=2)
    save_reference(name, model, (config.image_size, config.image_size),
                   lambda img: processor(images=img, return_tensors="pt")["pixel_values"],
                   lambda x: model(pixel_values=x).logits, **reference)


def timm_folder(name, architecture, model, size, labels, global_pool):
    model.eval()
    randomize(model, torch.float32)
    out = os.path.join(SNAPSHOTS, name)
    os.makedirs(out, exist_ok=True)
    pretrained_cfg = {"input_size": [3, size, size], "interpolation": "bicubic", "crop_pct": 0.875,
                      "crop_mode": "center", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    config = {"architecture": architecture, "num_classes": len(labels), "global_pool": global_pool,
              "label_names": labels, "pretrained_cfg": pretrained_cfg}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
    transform = create_transform(input_size=(3, size, size), interpolation="bicubic", crop_pct=0.875,
                                 crop_mode="center", mean=pretrained_cfg["mean"], std=pretrained_cfg["std"])
    save_reference(name, model, (size, size), lambda img: transform(img).unsqueeze(0), model)


def labels(n):
    return {"id2label": {i: f"class {i}" for i in range(n)}, "label2id": {f"class {i}": i for i in range(n)}}


hf("deit-teacher-head24-patch14-nobias-f16", DeiTForImageClassificationWithTeacher,
   DeiTConfig(image_size=56, patch_size=14, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=100, qkv_bias=False, hidden_act="gelu", layer_norm_eps=1e-12, **labels(5)),
   torch.float16,
   {"image_processor_type": "DeiTImageProcessor", "do_resize": True, "size": {"height": 64, "width": 64},
    "resample": 3, "do_center_crop": True, "crop_size": {"height": 56, "width": 56}, "do_rescale": True,
    "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225]},
   DeiTImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 56, "width": 56},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]))

hf("deit-plain-default-processor", DeiTForImageClassification,
   DeiTConfig(image_size=224, patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=37, qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-12, **labels(4)),
   # At 224 x 224 each tensor is 600 kB: one picture keeps the file small.
   torch.float32, None, DeiTImageProcessor(), random_inputs=0, pictures=("rgb",))

timm_folder("timm-deit-distilled", "deit_tiny_distilled_patch16_224",
            VisionTransformerDistilled(img_size=56, patch_size=14, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0,
                                       qkv_bias=False, num_classes=6),
            56, [f"label {i}" for i in range(6)], "token")

timm_folder("timm-deit3-layerscale", "deit3_small_patch16_224",
            VisionTransformer(img_size=48, patch_size=8, embed_dim=72, depth=2, num_heads=6, mlp_ratio=1.5,
                              qkv_bias=True, no_embed_class=True, init_values=1.0, num_classes=3),
            48, ["a", "b", "c"], "token")

timm_folder("timm-vit-avgpool-fcnorm", "vit_small_patch8_32",
            VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=6, mlp_ratio=2.0,
                              qkv_bias=True, global_pool="avg", fc_norm=True, num_classes=4),
            32, ["w", "x", "y", "z"], "avg")
