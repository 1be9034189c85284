"""app.images.preprocess_image on real pictures built with Pillow: every colour mode, EXIF
rotation, animation, damaged and hostile files."""

import io
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.images import ImageError, preprocess_image

WIDTH, HEIGHT = 180, 240


def draw_seven(ink=0, paper=255, size=(WIDTH, HEIGHT), at=(0, 0), mode="L"):
    """An upright, left-right asymmetric "7": a top bar and a diagonal down to the left."""
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    x, y = at
    draw.line([(x + 50, y + 60), (x + 130, y + 60)], fill=ink, width=16)
    draw.line([(x + 130, y + 60), (x + 80, y + 190)], fill=ink, width=16)
    return image


def encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def centre_of_mass(pixels):
    rows, cols = np.indices(pixels.shape)
    mass = pixels.sum()
    return (pixels * rows).sum() / mass, (pixels * cols).sum() / mass


def ink_box(pixels):
    rows = np.flatnonzero(pixels.any(axis=1))
    cols = np.flatnonzero(pixels.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def similarity(a, b):
    """Cosine similarity, best over whole-pixel shifts of up to one pixel: centring by mass
    moves a digit by whole pixels, so a tiny change in mass can tip it one pixel over."""
    best = -1.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            moved = np.roll(b, (dy, dx), axis=(0, 1))
            best = max(best, float((a * moved).sum() / np.sqrt((a * a).sum() * (moved * moved).sum())))
    return best


@pytest.fixture(scope="module")
def reference():
    return preprocess_image(encode(draw_seven(), "PNG"))


def refused(data, **kwargs):
    with pytest.raises(ImageError) as caught:
        preprocess_image(data, **kwargs)
    return caught.value


def test_dark_ink_on_white_becomes_light_digit_on_black_28x28(reference):
    assert reference.shape == (28, 28)
    assert reference.dtype == np.float32
    assert reference.min() == 0.0 and reference.max() == pytest.approx(1.0)
    border = np.concatenate([reference[0], reference[-1], reference[:, 0], reference[:, -1]])
    assert np.all(border == 0.0)
    # the top bar of the seven: a bright horizontal run of ink in the upper part
    top_rows = reference[:12]
    assert (top_rows > 0.5).sum(axis=1).max() >= 10


def test_light_ink_on_black_gives_the_same_digit_as_dark_ink_on_white(reference):
    light_on_dark = preprocess_image(encode(draw_seven(ink=255, paper=0), "PNG"))
    np.testing.assert_allclose(light_on_dark, reference, atol=1e-5)


def test_digit_is_cropped_and_fitted_to_20_pixels_on_its_longer_side(reference):
    height, width = ink_box(reference)
    assert height == 20
    # the seven's ink spans 96 x 146 px: the width keeps the ratio
    assert abs(width - 20 * 96 / 146) <= 1.5


def test_centre_of_mass_lands_within_half_a_pixel_of_14_14(reference):
    row, col = centre_of_mass(reference)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5


def test_tall_thin_digit_keeps_its_aspect_ratio():
    image = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(image).rectangle([130, 40, 169, 239], fill=0)  # 40 wide, 200 tall
    pixels = preprocess_image(encode(image, "PNG"))
    height, width = ink_box(pixels > 0.05)
    assert height == 20
    assert width in (4, 5)


def test_position_and_canvas_size_do_not_change_the_result(reference):
    shifted = draw_seven(size=(480, 500), at=(300, 260))
    np.testing.assert_allclose(preprocess_image(encode(shifted, "PNG")), reference, atol=1e-5)
    # a canvas larger than the working size is scaled down first: same digit, resampled
    far = draw_seven(size=(1400, 900), at=(1100, 650))
    assert similarity(preprocess_image(encode(far, "PNG")), reference) > 0.93


def test_large_photo_like_jpeg_is_handled_and_matches():
    big = draw_seven().resize((WIDTH * 12, HEIGHT * 12), Image.Resampling.BICUBIC)
    pixels = preprocess_image(encode(big.convert("RGB"), "JPEG", quality=90))
    small = preprocess_image(encode(draw_seven(), "PNG"))
    assert similarity(pixels, small) > 0.93


def test_mnist_digit_upscaled_comes_back_close_to_itself():
    images = np.load(Path(__file__).parents[2] / "engine" / "data" / "mnist-10k.npz")["images"]
    for index in range(10):
        digit = images[index] / 255.0
        picture = Image.fromarray(images[index]).resize(
            (112, 112), Image.Resampling.BICUBIC
        )
        pixels = preprocess_image(encode(picture, "PNG"))
        assert similarity(pixels, digit) > 0.9, index


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "WEBP", "JPEG"])
def test_every_accepted_format_decodes_to_the_same_digit(fmt, reference):
    options = {"lossless": True} if fmt == "WEBP" else {}
    pixels = preprocess_image(encode(draw_seven().convert("RGB"), fmt, **options))
    assert similarity(pixels, reference) > 0.97


def test_palette_image_with_transparent_background():
    palette = draw_seven(ink=1, paper=0, mode="P")
    palette.putpalette([200, 10, 10, 20, 20, 120] + [0] * 762)  # 0: red (to be hidden), 1: navy ink
    data = encode(palette, "PNG", transparency=0)
    pixels = preprocess_image(data)
    assert similarity(pixels, preprocess_image(encode(draw_seven(), "PNG"))) > 0.97


def test_palette_image_without_transparency(reference):
    palette = draw_seven().convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert palette.mode == "P"
    assert similarity(preprocess_image(encode(palette, "PNG")), reference) > 0.97


@pytest.mark.parametrize("ink", [(0, 0, 0), (255, 255, 255), (30, 90, 200)])
def test_rgba_strokes_on_a_transparent_canvas(ink, reference):
    # the hidden colour of the transparent pixels is the same as the ink: only alpha shows the digit
    canvas = Image.new("RGBA", (WIDTH, HEIGHT), ink + (0,))
    stroke = draw_seven(ink=255, paper=0)
    canvas.putalpha(stroke)
    pixels = preprocess_image(encode(canvas, "PNG"))
    assert similarity(pixels, reference) > 0.97


def test_rgba_picture_with_its_own_background_and_transparent_margins(reference):
    canvas = Image.new("RGBA", (WIDTH + 200, HEIGHT + 200), (0, 0, 0, 0))
    canvas.paste(draw_seven().convert("RGBA"), (100, 100))
    assert similarity(preprocess_image(encode(canvas, "PNG")), reference) > 0.97


def test_la_image(reference):
    grey = draw_seven()
    la = Image.merge("LA", (grey, Image.new("L", grey.size, 255)))
    assert similarity(preprocess_image(encode(la, "PNG")), reference) > 0.97


def test_one_bit_image(reference):
    bilevel = draw_seven().convert("1")
    assert bilevel.mode == "1"
    assert similarity(preprocess_image(encode(bilevel, "PNG")), reference) > 0.95
    assert similarity(preprocess_image(encode(bilevel, "BMP")), reference) > 0.95


def test_cmyk_jpeg(reference):
    cmyk = draw_seven().convert("RGB").convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert similarity(preprocess_image(data), reference) > 0.95


def test_sixteen_bit_grey_png_uses_the_full_depth(reference):
    # ink and paper both above 255 in 16-bit: an 8-bit clip would make the picture blank
    levels = np.where(np.asarray(draw_seven()) > 127, 60000, 20000).astype(np.uint16)
    image = Image.fromarray(levels)
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert similarity(preprocess_image(data), reference) > 0.97


def with_orientation(image, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize(
    "orientation, stored",
    # orientation 6: the viewer rotates 90° clockwise, so the stored pixels are turned the other way
    [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)],
)
def test_exif_orientation_is_applied(orientation, stored):
    upright = draw_seven().convert("RGB")
    expected = preprocess_image(encode(upright, "JPEG", quality=95))
    sideways = upright.transpose(stored)
    pixels = preprocess_image(with_orientation(sideways, orientation))
    assert similarity(pixels, expected) > 0.97
    # and without the tag the same pixels give a clearly different digit
    ignored = preprocess_image(encode(sideways, "JPEG", quality=95))
    assert similarity(ignored, expected) < 0.8


def test_animated_gif_uses_the_first_frame():
    first = draw_seven().convert("P")
    second = Image.new("L", (WIDTH, HEIGHT), 255)
    ImageDraw.Draw(second).ellipse([40, 40, 140, 200], outline=0, width=16)
    data = encode(first, "GIF", save_all=True, append_images=[second.convert("P")], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    pixels = preprocess_image(data)
    first_alone = preprocess_image(encode(draw_seven().convert("P"), "GIF"))
    second_alone = preprocess_image(encode(second.convert("P"), "GIF"))
    assert similarity(pixels, first_alone) > 0.99
    assert similarity(pixels, second_alone) < 0.8


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_file_is_refused_with_422(fmt):
    data = encode(draw_seven().convert("RGB"), fmt)
    for cut in (len(data) // 2, 40, 12):
        error = refused(data[:cut])
        assert error.status_code == 422, (cut, error.message)


def test_png_with_corrupt_compressed_data_is_refused_with_422():
    data = bytearray(encode(draw_seven(), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start:start + 64] = bytes(64)
    assert refused(bytes(data)).status_code == 422


def test_empty_file_is_refused_with_422():
    error = refused(b"")
    assert error.status_code == 422 and "empty" in error.message


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(0).bytes(5000),
        b"This is the digit seven, typed out in words.\n" * 20,
        b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
        b'<path d="M5 5 L20 5 L10 25" stroke="black"/></svg>',
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
    ],
    ids=["random-bytes", "text", "svg", "pdf"],
)
def test_non_images_are_refused_with_415(data):
    error = refused(data)
    assert error.status_code == 415
    assert "PNG, JPEG, GIF, BMP or WebP" in error.message


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM", "TGA"])
def test_real_images_in_other_formats_are_refused_with_415(fmt):
    data = encode(draw_seven().convert("RGB"), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow can read it; we still refuse
    assert refused(data).status_code == 415


def png_header_only(width, height):
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
            ">I", zlib.crc32(kind + payload)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    idat = zlib.compress(bytes(1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_header_is_refused_with_413_before_decoding():
    data = png_header_only(30000, 30000)
    assert len(data) < 200
    started = time.perf_counter()
    error = refused(data)
    elapsed = time.perf_counter() - started
    assert error.status_code == 413 and "too many pixels" in error.message
    # decoding 900 megapixels would take many seconds and ~1 GB; refusing reads 60 bytes
    assert elapsed < 1.0


def test_header_over_the_pixel_cap_but_under_pillows_own_guard_is_refused_with_413():
    data = png_header_only(6000, 5000)
    error = refused(data)
    assert error.status_code == 413
    assert "6000×5000" in error.message


def test_pixel_cap_is_a_parameter():
    data = encode(draw_seven(), "PNG")
    assert refused(data, max_pixels=WIDTH * HEIGHT - 1).status_code == 413
    assert preprocess_image(data, max_pixels=WIDTH * HEIGHT).shape == (28, 28)


@pytest.mark.parametrize("colour", [0, 255, 128])
def test_blank_image_is_refused_with_422(colour):
    error = refused(encode(Image.new("L", (64, 64), colour), "PNG"))
    assert error.status_code == 422 and "blank" in error.message


def test_faint_noise_on_blank_paper_is_refused_as_blank():
    noise = np.random.default_rng(1).integers(245, 256, size=(200, 200), dtype=np.uint8)
    assert refused(encode(Image.fromarray(noise), "PNG")).status_code == 422


def test_fully_transparent_image_is_refused_with_422():
    error = refused(encode(Image.new("RGBA", (50, 50), (0, 0, 0, 0)), "PNG"))
    assert error.status_code == 422


def test_single_dot_is_accepted_as_a_tiny_digit():
    image = Image.new("L", (50, 50), 255)
    image.putpixel((20, 30), 0)
    pixels = preprocess_image(encode(image, "PNG"))
    assert pixels.max() == pytest.approx(1.0)
    assert np.isfinite(pixels).all()


def test_no_global_pillow_or_warning_state_is_changed():
    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    preprocess_image(encode(draw_seven(), "PNG"))
    refused(png_header_only(30000, 30000))
    refused(b"not an image")
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before
