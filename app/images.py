"""Turn an uploaded picture of a digit into a 28×28 MNIST-style input.

MNIST digits are light strokes on a black field, scaled so the longer side of the digit fits a
20×20 box (aspect kept, grey levels from anti-aliasing) and placed in a 28×28 frame so that the
centre of mass of the ink sits at the centre. `preprocess_image` reproduces that from whatever a
student uploads: a phone photo of a digit on paper, a drawing exported with a transparent
background, a scan in CMYK or 16-bit grey.

Decisions worth knowing:
- Only PNG, JPEG, GIF, BMP and WebP are accepted, judged by the decoded format, never by the file
  name. Anything else (TIFF, SVG, text, random bytes) is refused with 415.
- The pixel count is checked from the header, before any pixel is decoded, so a tiny file that
  claims 30000×30000 costs nothing (413).
- Animated or multi-frame images (GIF, APNG, animated WebP): the first frame is used. It is the
  frame every viewer shows as the picture's still, and reading it never decodes the others.
- A file that cannot be decoded (truncated, corrupt, empty) or holds no ink (one flat colour) is
  refused with 422.

Pure function: no web imports, no global Pillow setting is changed.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")

# A 12-megapixel phone photo passes with room to spare; a 48-megapixel full-resolution one
# does not need to: a digit needs far fewer pixels than that.
DEFAULT_MAX_PIXELS = 25_000_000

# The picture is brought down to this many pixels on its longer side before any float work:
# the result is 28×28, and a digit keeps plenty of detail at 512.
WORKING_SIZE = 512

DIGIT_BOX = 20
FRAME = 28
# MNIST's own centre of mass (measured on the shipped sample: 14.00 ± 0.29 on both axes).
CENTRE_OF_MASS = 14.0

# Contrast below this fraction of the full grey scale is treated as no ink at all: sensor noise
# and JPEG ringing on a blank sheet stay below it, a pencil stroke does not.
MIN_CONTRAST = 0.08
# After the background is mapped to 0 and the brightest ink to 1, levels below this are paper
# texture and shadow, not stroke; they are cleared so they neither widen the crop nor pull the
# centre of mass.
NOISE_FLOOR = 0.2

# Opaque pixels whose tones spread less than this are one colour of stroke: the shape of the
# digit is then in the alpha channel, not in the tones.
SHAPE_IN_TONE = 0.25

# Leading bytes of the accepted formats: a file that starts like one of them but cannot be
# opened is a damaged image (422), not a file of the wrong kind (415).
_SIGNATURES = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
}


class ImageError(ValueError):
    """An upload that cannot become a digit; `status_code` is the HTTP status to answer with."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def preprocess_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode `data` and return the digit as a (28, 28) float32 array in [0, 1], light on dark.

    Raises ImageError with status 415 (not an accepted image format), 413 (more than
    `max_pixels` pixels) or 422 (empty, truncated, corrupt, or no ink).
    """
    image = _open_checked(data, max_pixels)
    grey = _to_grey(image)
    digit = _crop_to_ink(_light_on_dark(grey))
    return _centre_by_mass(_fit_box(digit))


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError("the uploaded file is empty", 422)
    supported = "PNG, JPEG, GIF, BMP or WebP"
    try:
        # Image.open reads the header only; the pixel data is decoded later, by load().
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        # Pillow's own guard fires on headers far past any sane size, before our finer check.
        raise ImageError(
            f"the image has too many pixels: over the limit of {max_pixels:,}", 413
        ) from None
    except UnidentifiedImageError:
        damaged = _claimed_format(data)
        if damaged:
            raise ImageError(f"the {damaged} file is damaged and cannot be read", 422) from None
        raise ImageError(f"not a supported image: send a {supported} file", 415) from None
    except Exception as error:  # a malformed header can make any plugin raise anything
        raise ImageError(f"the image header cannot be read: {error}", 422) from None

    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"the image has too many pixels: {width}×{height} is over the limit of "
            f"{max_pixels:,}",
            413,
        )
    if width == 0 or height == 0:
        raise ImageError("the image has no pixels", 422)

    # JPEG can decode straight at 1/2, 1/4 or 1/8 scale: a large photo never needs full size.
    image.draft(None, (WORKING_SIZE, WORKING_SIZE))
    try:
        image.load()
    except Exception as error:  # truncated or corrupt data surfaces as many exception types
        raise ImageError(
            f"the {image.format} file is truncated or corrupt and cannot be decoded ({error})", 422
        ) from None
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not reject an otherwise readable picture
        upright = image
    return upright if upright is not None else image


def _claimed_format(data: bytes) -> str | None:
    for name, signatures in _SIGNATURES.items():
        if data.startswith(signatures):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _to_grey(image: Image.Image) -> np.ndarray:
    """Luminance in [0, 1] at most WORKING_SIZE on the longer side, transparency resolved."""
    if image.mode.startswith("I") or image.mode == "F":
        return _high_depth_grey(image)

    if "transparency" in image.info or image.mode in ("PA", "LA", "La", "RGBA", "RGBa"):
        image = image.convert("RGBA").convert("LA")
    elif image.mode != "L":
        # via RGB: "1", "P", "CMYK", "YCbCr"... all have a conversion to RGB
        image = image.convert("RGB").convert("L")
    image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)

    levels = np.asarray(image, dtype=np.float32) / 255.0
    if image.mode == "L":
        return levels
    return _composite(levels[..., 0], levels[..., 1])


def _high_depth_grey(image: Image.Image) -> np.ndarray:
    # 16-bit grey (PNG) decodes to "I;16*" or "I"; Pillow's convert("L") would clip it at 255.
    values = np.asarray(image).astype(np.float32)
    top = max(65535.0, float(values.max()))
    plane = Image.fromarray(np.clip(values, 0.0, None) / top, mode="F")
    plane.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)
    return np.asarray(plane, dtype=np.float32)


def _composite(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten a grey + alpha picture onto the backdrop a person would judge it drawn on.

    If the opaque pixels are all about one tone, the digit's shape lies in the alpha channel
    (strokes exported on a transparent canvas): the backdrop is the opposite of that tone, so
    dark strokes land on white and light strokes on black. If the opaque pixels themselves
    show the digit (ink on a sheet, with transparent margins around the sheet), the backdrop
    takes the sheet's tone (their median) so the margins disappear into it.
    """
    opaque = alpha > 0.5
    if not opaque.any():
        raise ImageError("the image is fully transparent: there is no digit in it", 422)
    tones = grey[opaque]
    low, median, high = np.percentile(tones, [5, 50, 95])
    if high - low < SHAPE_IN_TONE:
        backdrop = 0.0 if median >= 0.5 else 1.0
    else:
        backdrop = float(median)
    return grey * alpha + backdrop * (1.0 - alpha)


def _light_on_dark(grey: np.ndarray) -> np.ndarray:
    """Return the picture scaled so the background is 0 and the brightest ink 1.

    The background is judged from the border, where a centred digit leaves paper: if the border
    is lighter than the middle of the picture's range, the picture is dark ink on light paper
    and is inverted.
    """
    low, high = float(grey.min()), float(grey.max())
    if high - low < MIN_CONTRAST:
        raise ImageError("the image is blank: no digit stands out from the background", 422)
    border = _border(grey)
    background = float(np.median(border))
    if background > (low + high) / 2:
        grey = 1.0 - grey
        background = 1.0 - background
        high = 1.0 - low
    if high - background < MIN_CONTRAST:
        raise ImageError("the image is blank: no digit stands out from the background", 422)
    levels = (grey - background) / (high - background)
    return np.clip((levels - NOISE_FLOOR) / (1.0 - NOISE_FLOOR), 0.0, 1.0)


def _border(grey: np.ndarray) -> np.ndarray:
    height, width = grey.shape
    ring = max(1, min(height, width) // 20)
    return np.concatenate([
        grey[:ring].ravel(), grey[-ring:].ravel(), grey[:, :ring].ravel(), grey[:, -ring:].ravel()
    ])


def _crop_to_ink(levels: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(levels.any(axis=1))
    cols = np.flatnonzero(levels.any(axis=0))
    if rows.size == 0:
        raise ImageError("the image is blank: no digit stands out from the background", 422)
    return levels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _fit_box(digit: np.ndarray) -> np.ndarray:
    """Scale so the longer side is DIGIT_BOX pixels, keeping the aspect ratio."""
    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(digit.astype(np.float32), mode="F").resize(
        size, Image.Resampling.LANCZOS
    )
    # Lanczos overshoots a little next to sharp edges; MNIST's grey levels span exactly [0, 1].
    fitted = np.clip(np.asarray(resized, dtype=np.float32), 0.0, None)
    peak = float(fitted.max())
    if peak <= 0.0:
        raise ImageError("the image is blank: no digit stands out from the background", 422)
    return np.clip(fitted / peak, 0.0, 1.0)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place `digit` in a FRAME×FRAME field, shifted by whole pixels (as MNIST was) so that its
    centre of mass lands on CENTRE_OF_MASS, without letting it leave the frame."""
    height, width = digit.shape
    mass = digit.sum()
    rows, cols = np.indices(digit.shape)
    centre_row = float((digit * rows).sum() / mass)
    centre_col = float((digit * cols).sum() / mass)
    top = int(np.clip(round(CENTRE_OF_MASS - centre_row), 0, FRAME - height))
    left = int(np.clip(round(CENTRE_OF_MASS - centre_col), 0, FRAME - width))
    frame = np.zeros((FRAME, FRAME), dtype=np.float32)
    frame[top:top + height, left:left + width] = digit
    return frame
