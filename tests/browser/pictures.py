"""Reading a strip card's picture back in the browser, for the tests that check what it shows."""

from __future__ import annotations

# A card's picture decoded as the figure shows it: its RGBA pixels, size, cell scale, the numbers
# painted into it, and whether the figure's image for the card shows this very picture.
PICTURE_PIXELS_JS = """async layer => {
  const strip = window.cnnviz.app.strip;
  const picture = strip.cards.get(layer).picture;
  const n = (strip.figureOrder || []).indexOf(layer);
  const drawn = n < 0 ? null : strip.figure.querySelectorAll('image')[n];
  const image = new Image();
  image.src = picture.source;
  await image.decode();
  const canvas = document.createElement('canvas');
  canvas.width = image.width; canvas.height = image.height;
  const context = canvas.getContext('2d');
  context.drawImage(image, 0, 0);
  return {width: image.width, height: image.height, scaleX: picture.scaleX, scaleY: picture.scaleY,
          scale: picture.scaleX === picture.scaleY ? picture.scaleX : null, texts: picture.texts,
          shown: Boolean(drawn) && drawn.getAttribute('href') === picture.source,
          data: [...context.getImageData(0, 0, image.width, image.height).data]};
}"""


def pixel(picture: dict, x: int, y: int) -> tuple:
    """The RGB of pixel (x, y) of a picture read with PICTURE_PIXELS_JS."""
    at = (y * picture["width"] + x) * 4
    return tuple(picture["data"][at:at + 3])


def cells_with_text(picture: dict) -> int:
    """How many of the picture's printed cells hold pixels far from the cell's own colour (its
    corner's): the number written in it."""
    count = 0
    for x, y in zip(picture["texts"]["x"], picture["texts"]["y"]):
        corner = pixel(picture, x * picture["scaleX"], y * picture["scaleY"])
        differing = sum(
            1
            for py in range(y * picture["scaleY"], (y + 1) * picture["scaleY"])
            for px in range(x * picture["scaleX"], (x + 1) * picture["scaleX"])
            if sum(abs(a - b) for a, b in zip(pixel(picture, px, py), corner)) > 60
        )
        count += differing >= 4
    return count
