"""Reading a strip card's picture back in the browser, for the tests that check what it shows."""

from __future__ import annotations

# A card's picture decoded as the figure shows it: its RGBA pixels, size, cell scale, the numbers
# printed over it, and whether the figure's image for the card shows this very picture.
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
  return {width: image.width, height: image.height, scale: picture.scale, texts: picture.texts,
          shown: Boolean(drawn) && drawn.getAttribute('href') === picture.source,
          data: [...context.getImageData(0, 0, image.width, image.height).data]};
}"""


def pixel(picture: dict, x: int, y: int) -> tuple:
    """The RGB of pixel (x, y) of a picture read with PICTURE_PIXELS_JS."""
    at = (y * picture["width"] + x) * 4
    return tuple(picture["data"][at:at + 3])


# Where a card's picture is on the screen and the size of its cells, to look at it in a screenshot.
PICTURE_BOX_JS = """layer => {
  const strip = window.cnnviz.app.strip;
  const n = strip.figureOrder.indexOf(layer);
  const box = strip.figure.querySelectorAll('image')[n].getBoundingClientRect();
  const model = strip.cards.get(layer).model;
  return {left: box.left, top: box.top, cellW: model.cellW, cellH: model.cellH,
          texts: strip.cards.get(layer).picture.texts};
}"""


def cells_showing_numbers(page, layer: int) -> int:
    """How many of a card's printed cells show, on the screen, pixels far from the cell's own
    colour (its corner's): the number written over it, visible above the picture."""
    from io import BytesIO

    from PIL import Image

    box = page.evaluate(PICTURE_BOX_JS, layer)
    shot = Image.open(BytesIO(page.screenshot())).convert("RGB")
    count = 0
    for x, y in zip(box["texts"]["x"], box["texts"]["y"]):
        left = round(box["left"] + x * box["cellW"]) + 1
        top = round(box["top"] + y * box["cellH"]) + 1
        right = round(box["left"] + (x + 1) * box["cellW"]) - 1
        bottom = round(box["top"] + (y + 1) * box["cellH"]) - 1
        corner = shot.getpixel((left, top))
        differing = sum(
            1
            for py in range(top, bottom)
            for px in range(left, right)
            if sum(abs(a - b) for a, b in zip(shot.getpixel((px, py)), corner)) > 60
        )
        count += differing >= 4
    return count
