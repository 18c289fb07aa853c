"""Decoding every kind of image right (16-bit scaled, not clipped; palettes, alpha, CMYK, EXIF
orientation) and each bad file refused with a BadImage naming it and why; folder listing (hidden
and macOS ``._`` files skipped) and the content hash that notices an image changed under its name."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from xai_torch import XaiError
from xai_torch.dataset.images import BadImage, decode_image
from xai_torch.dataset.sources import build_source


def _png(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_high_depth_images_are_scaled_not_clipped():
    ramp = (np.arange(48, dtype=np.uint32).reshape(6, 8) * 1365).astype(np.uint16)  # 0 .. 64155
    grey = decode_image(_png(Image.fromarray(ramp)), "g16.png")  # PIL mode I;16
    assert grey.dtype == np.float32 and grey.shape == (6, 8, 3)
    np.testing.assert_array_equal(grey[..., 0], ramp / np.float32(65535))
    assert np.all(np.diff(grey[..., 1].ravel()) > 0), "a 16-bit gradient must come out as a gradient"
    clipped = np.asarray(Image.open(io.BytesIO(_png(Image.fromarray(ramp)))).convert("RGB"))
    assert (clipped.reshape(-1, 3)[1:] == 255).all()  # the fault: convert("RGB") turns it white
    as_int = decode_image(_png(Image.fromarray(ramp.astype(np.int32)), "TIFF"), "i32.tif")  # mode I
    np.testing.assert_array_equal(as_int, grey)
    unit = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    np.testing.assert_array_equal(decode_image(_png(Image.fromarray(unit), "TIFF"), "f.tif")[..., 2], unit)
    np.testing.assert_allclose(decode_image(_png(Image.fromarray(unit * 255), "TIFF"), "f255.tif")[..., 0], unit,
                               rtol=1e-6)
    import cv2

    rgb16 = np.stack([ramp, ramp // 2, 65535 - ramp], -1).astype(np.uint16)
    for ext in (".png", ".tif"):  # 16-bit colour: PIL keeps the high byte, we keep all 16 bits
        ok, enc = cv2.imencode(ext, np.ascontiguousarray(rgb16[..., ::-1]))
        out = decode_image(enc.tobytes(), "c16" + ext)
        assert ok and out.dtype == np.float32
        np.testing.assert_array_equal(out, rgb16 / np.float32(65535))
    with pytest.raises(BadImage, match="32-bit integer pixels in \\[0, 70000\\]"):
        decode_image(_png(Image.fromarray(np.array([[0, 70000]], np.int32)), "TIFF"), "big.tif")
    with pytest.raises(BadImage, match="float pixels in \\[-1, 3\\]"):
        decode_image(_png(Image.fromarray(np.array([[-1, 3]], np.float32)), "TIFF"), "hdr.tif")


def test_eight_bit_modes_and_exif_orientation():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    assert decode_image(_png(base), "a.png").dtype == np.uint8
    np.testing.assert_array_equal(decode_image(_png(base), "a.png"), rgb)
    rgba = Image.fromarray(np.dstack([rgb, np.full((5, 7), 7, np.uint8)]))  # alpha dropped, colour kept
    np.testing.assert_array_equal(decode_image(_png(rgba), "a.png"), rgb)
    la = Image.fromarray(rgb[..., 0]).convert("LA")
    np.testing.assert_array_equal(decode_image(_png(la), "la.png"), np.repeat(rgb[..., :1], 3, 2))
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    np.testing.assert_array_equal(decode_image(_png(pal, transparency=0), "p.png"),
                                  np.asarray(pal.convert("RGB")))
    cmyk = base.convert("CMYK")
    np.testing.assert_array_equal(decode_image(_png(cmyk, "TIFF"), "c.tif"), np.asarray(cmyk.convert("RGB")))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    turned = decode_image(_png(base, exif=exif), "r.png")
    np.testing.assert_array_equal(turned, np.rot90(rgb, k=-1))


def test_bad_files_raise_bad_image_with_the_reason(monkeypatch):
    jpeg = _png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)), "JPEG")
    cases = [(b"", "x.png", "empty file \\(0 bytes\\)"),
             (b"not an image at all", "notes.png", "not an image \\(19 bytes"),
             (b"\x00\x05\x16\x07" + b"\x00" * 60, "a/._photo.jpg", "macOS resource-fork"),
             (jpeg[:40], "head.jpg", "truncated or corrupt header"),
             (jpeg[: len(jpeg) * 3 // 4], "cut.jpg", "truncated or corrupt \\(OSError: image file is truncated")]
    for data, name, reason in cases:
        with pytest.raises(BadImage, match=reason) as info:
            decode_image(data, name)
        assert info.value.id == name and isinstance(info.value, XaiError) and name in str(info.value)
    small = _png(Image.new("RGB", (10, 10)))
    with pytest.raises(BadImage, match="too many pixels \\(10 x 10 = 0.0 MP > 0.0 MP\\)"):
        decode_image(small, "bomb.png", max_pixels=99)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60)  # PIL only warns up to twice its limit: we refuse
    with pytest.raises(BadImage, match="too many pixels \\(10 x 10 = 0.0 MP > 0.0 MP\\)"):
        decode_image(small, "bomb.png")
    assert decode_image(small, "ok.png", max_pixels=0).shape == (10, 10, 3)  # no limit of ours
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # PIL itself refuses at twice its limit
    with pytest.raises(BadImage, match="too many pixels, a possible decompression bomb"):
        decode_image(small, "bomb.png", max_pixels=0)


def test_folder_skips_hidden_files_and_notices_changed_content(tmp_path):
    root = tmp_path / "imgs"
    (root / ".cache").mkdir(parents=True)
    ramp = (np.arange(144, dtype=np.uint32).reshape(12, 12) * 450).astype(np.uint16)
    Image.fromarray(ramp).save(root / "deep.png")
    Image.fromarray(np.full((12, 12, 3), 200, np.uint8)).save(root / "flat.png")
    (root / "._deep.png").write_bytes(b"\x00\x05\x16\x07resource fork")
    (root / ".cache" / "thumb.png").write_bytes((root / "flat.png").read_bytes())
    src = build_source(str(root), None, input_size=8, resize=12)
    assert src.ids == ["deep.png", "flat.png"] and src.skipped == 2
    assert src.identity["hash"] == "content" and src.identity["hash_rule"].startswith("auto: 0.0 MB <= 2.1 GB")
    x = src.get(0)  # normalised with ImageNet statistics: undo it, the 16-bit ramp comes back (cropped)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pix = x * std.view(3, 1, 1) + mean.view(3, 1, 1)
    torch.testing.assert_close(pix[0], torch.from_numpy(ramp[2:10, 2:10] / np.float32(65535)), atol=1e-6, rtol=0)
    names = build_source(str(root), None, hash="names").identity
    assert names["hash"] == "names" and "content_sha256" not in names
    before = dict(src.identity)
    Image.fromarray(np.full((12, 12, 3), 201, np.uint8)).save(root / "flat.png")  # same name, same size
    with pytest.raises(BadImage, match="content changed since the run started") as info:
        src.get(1)
    assert info.value.id == "flat.png"
    after = build_source(str(root), None, input_size=8, resize=12).identity
    assert after["content_sha256"] != before["content_sha256"]
    assert build_source(str(root), None, hash="names").identity == names  # names cannot see it: the option's cost
    with pytest.raises(XaiError, match="hash must be one of auto, content, names; got 'md5'"):
        build_source(str(root), None, hash="md5")


def test_dataset_content_hash_and_bad_items():
    class Items(torch.utils.data.Dataset):
        def __init__(self, xs):
            self.xs, self.ids = xs, [f"im{i}" for i in range(len(xs))]

        def __len__(self):
            return len(self.xs)

        def __getitem__(self, i):
            if self.xs[i] is None:
                raise OSError("disk said no")
            return self.xs[i], i

    xs = [torch.zeros(3, 4, 4), torch.ones(3, 4, 4)]
    ident = build_source(Items(xs), None, hash="content").identity
    assert ident["hash"] == "content"
    assert build_source(Items([xs[0], xs[1] * 2]), None, hash="content").identity["content_sha256"] != \
        ident["content_sha256"]
    assert build_source(Items(xs), None).identity["hash"] == "names"  # auto never loads a whole dataset
    src = build_source(Items([xs[0], None, torch.zeros(4, 4)]), None)
    with pytest.raises(BadImage, match="'im1' cannot be used: the dataset raised OSError: disk said no"):
        src.get(1)
    with pytest.raises(BadImage, match="must be a \\(C, H, W\\) tensor"):
        src.get(2)
