#!/usr/bin/env python3
"""Writes the image files tests/images.rs reads (tests/data/images/), with Pillow:

    pip install pillow && python3 tools/make_test_images.py ../shared/images/photos/chelsea.png

- reference.png: a 60x40 crop of the photo (the truth the others are compared with);
- exif-rotate-*.jpg: the reference stored rotated or mirrored, with the EXIF orientation
  tag (3, 6, 8, 2) that tells a viewer how to turn it back;
- cmyk.jpg: the reference converted to CMYK by Pillow (C = 255 - R, ..., K = 0);
- palette.png: the reference quantized to a 16-colour palette, and palette-rgb.png, that
  palette image converted to RGB by Pillow;
- grey16.png: a 16-bit grey ramp (Pillow mode I;16).
"""
import sys

from PIL import Image

out = "tests/data/images/"
photo = Image.open(sys.argv[1]).convert("RGB")
ref = photo.resize((120, 80), Image.Resampling.BILINEAR).crop((30, 20, 90, 60))
ref.save(out + "reference.png")

# (tag, how the file stores the picture): a viewer applies the tag's transform to get `ref`.
stored = {
    3: ref.transpose(Image.Transpose.ROTATE_180),
    6: ref.transpose(Image.Transpose.ROTATE_90),  # tag 6: rotate 90 clockwise to display
    8: ref.transpose(Image.Transpose.ROTATE_270),  # tag 8: rotate 90 counter-clockwise
    2: ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
}
for tag, img in stored.items():
    exif = Image.Exif()
    exif[0x0112] = tag
    img.save(out + f"exif-rotate-{tag}.jpg", quality=95, exif=exif)

ref.convert("CMYK").save(out + "cmyk.jpg", quality=95)
pal = ref.quantize(colors=16)
pal.save(out + "palette.png")
pal.convert("RGB").save(out + "palette-rgb.png")
ramp = Image.new("I;16", (64, 8))
ramp.putdata([x * 1000 + y for y in range(8) for x in range(64)])
ramp.save(out + "grey16.png")
