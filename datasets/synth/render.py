"""Rendering of SynthPedes images: one pedestrian (or a distractor / junk box) under one camera.

What an image shows (see ``datasets/synth/__init__.py`` for the dataset built from these images):

- a per-camera background style (plaza tiles, park, corridor, facade windows, night street,
  car park) with random clutter shapes and a low-frequency texture;
- a pedestrian drawn from simple shapes, at a jittered scale and position: head, skin, hair
  (colour, short / long), optional hat (cap / beanie, with colour), upper garment (colour and
  pattern: plain / horizontal stripes / vertical stripes / checks, optional chest logo), lower
  garment (trousers / shorts / skirt), shoes, optional bag (backpack / handbag / shoulder bag);
- the view changes the drawing: ``front`` (face, chest logo, backpack straps only), ``back``
  (hair covers the head, backpack fully visible, no logo), ``side`` (narrower body, one arm,
  backpack sticking out behind, cap brim to the front);
- optionally an occluder (low wall / car from below, pole or passer-by from the side);
- the camera's illumination: gain, gamma, colour cast, a light gradient, per-image exposure
  jitter, optical blur and sensor noise (stronger in the dark cameras).

Shapes are drawn with PIL at ``SUPERSAMPLE`` x the output size and reduced with a box filter
(anti-aliasing); photometric effects are applied in numpy. A render is a pure function of its
arguments and of the ``numpy.random.Generator`` passed in, so seeding one generator per image
from (seed, pid, image index) makes the output independent of the generation order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Color = Tuple[float, float, float]

SUPERSAMPLE = 2
VIEWS = ("front", "back", "side")  # view ids 0, 1, 2
BT709 = np.array([0.2126, 0.7152, 0.0722])

# Garment / accessory colours (linear-ish RGB in [0, 1], before the camera's illumination).
# Neighbouring colours (red / orange / pink, blue / navy, white / grey / beige) are deliberately
# included: under the dark and colour-cast cameras they are easy to confuse.
COLORS: Dict[str, Color] = {
    "red": (0.80, 0.10, 0.10),
    "orange": (0.95, 0.50, 0.10),
    "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.58, 0.20),
    "blue": (0.15, 0.32, 0.82),
    "navy": (0.10, 0.13, 0.38),
    "purple": (0.50, 0.20, 0.62),
    "pink": (0.96, 0.58, 0.72),
    "brown": (0.45, 0.28, 0.14),
    "beige": (0.86, 0.77, 0.58),
    "white": (0.93, 0.93, 0.93),
    "grey": (0.52, 0.52, 0.54),
    "black": (0.08, 0.08, 0.09),
}
HAIR_COLORS: Dict[str, Color] = {
    "black": (0.06, 0.05, 0.05),
    "brown": (0.36, 0.21, 0.10),
    "blond": (0.88, 0.74, 0.42),
    "grey": (0.68, 0.68, 0.68),
    "red": (0.62, 0.20, 0.07),
}
SKIN_TONES: Dict[str, Color] = {
    "light": (0.96, 0.80, 0.69),
    "medium": (0.82, 0.62, 0.46),
    "tan": (0.66, 0.46, 0.31),
    "dark": (0.42, 0.28, 0.19),
}

UPPER_COLORS = ("red", "orange", "yellow", "green", "blue", "navy", "purple", "pink", "brown",
                "beige", "white", "grey", "black")
LOWER_COLORS = ("black", "blue", "navy", "grey", "brown", "beige", "white", "red", "green")
SHOE_COLORS = ("black", "white", "brown", "red", "blue", "grey")
BAG_COLORS = ("black", "brown", "red", "blue", "grey", "beige", "green")
HAT_COLORS = ("black", "red", "blue", "white", "grey", "green", "yellow")
LOGO_COLORS = ("white", "yellow", "red", "blue", "black", "green")
PATTERN_COLORS = ("white", "black", "red", "blue", "yellow", "grey", "green")
PATTERNS = ("plain", "horizontal_stripes", "vertical_stripes", "checks")
LOWER_TYPES = ("trousers", "shorts", "skirt")
BAG_TYPES = ("none", "backpack", "handbag", "shoulder_bag")
HAT_TYPES = ("none", "cap", "beanie")
HAIR_LENGTHS = ("short", "long")
HEIGHTS = {"short": 0.74, "medium": 0.81, "tall": 0.88}     # person height / image height
BUILDS = {"slim": 0.84, "average": 1.0, "broad": 1.18}       # torso width factor


@dataclass(frozen=True)
class Camera:
    """One camera's look. ``dark`` cameras are designed to give mean BT.709 luma < 0.35.

    Args:
        name: short description (written to meta.json).
        background: background style drawn behind the people (see ``BACKGROUNDS``).
        gain: exposure multiplier applied to the rendered image.
        gamma: tone curve exponent (> 1 darkens the mid-tones).
        cast: per-channel (R, G, B) multiplier, the camera's colour cast.
        noise: standard deviation of the additive Gaussian sensor noise.
        blur: maximum Gaussian blur radius, in output pixels.
        view_probs: probabilities of the front / back / side views at this camera.
        dark: whether this is one of the dark cameras.
    """

    name: str
    background: str
    gain: float
    gamma: float
    cast: Color
    noise: float
    blur: float
    view_probs: Tuple[float, float, float]
    dark: bool


CAMERAS: Tuple[Camera, ...] = (
    Camera("sunny plaza", "plaza", 1.06, 0.92, (1.00, 0.99, 0.93), 0.010, 0.6, (0.5, 0.3, 0.2), False),
    Camera("park path", "park", 0.97, 1.00, (0.95, 1.04, 0.90), 0.012, 0.7, (0.3, 0.4, 0.3), False),
    Camera("dim corridor, warm light", "corridor", 0.58, 1.15, (1.18, 0.95, 0.68), 0.025, 0.9,
           (0.4, 0.2, 0.4), True),
    Camera("shaded facade", "facade", 0.82, 1.00, (0.90, 0.96, 1.12), 0.015, 0.7, (0.2, 0.5, 0.3), False),
    Camera("night street", "street", 0.75, 1.10, (0.84, 0.92, 1.22), 0.030, 1.0, (0.35, 0.35, 0.3), True),
    Camera("overcast car park", "carpark", 0.92, 1.05, (1.04, 0.98, 1.03), 0.015, 0.8,
           (0.35, 0.3, 0.35), False),
)


def _c255(color: Sequence[float], scale: float = 1.0) -> Tuple[int, int, int]:
    return tuple(int(round(255 * min(1.0, max(0.0, c * scale)))) for c in color)


def _jitter_color(rng: np.random.Generator, color: Color, amount: float) -> Color:
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0, 1)) for c in color)


def _random_color(rng: np.random.Generator) -> Color:
    return tuple(float(v) for v in rng.uniform(0.05, 0.95, size=3))


def _muted_color(rng: np.random.Generator) -> Color:
    """A background-object colour: a grey level with a moderate tint."""
    grey = rng.uniform(0.2, 0.8)
    return tuple(float(np.clip(grey + v, 0, 1)) for v in rng.uniform(-0.18, 0.18, size=3))


# ---------------------------------------------------------------------------------------------
# Backgrounds (drawn at the supersampled size)
# ---------------------------------------------------------------------------------------------

def _vertical_gradient(w: int, h: int, top: Color, bottom: Color) -> Image.Image:
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    arr = (1 - t) * np.array(top) + t * np.array(bottom)
    arr = np.broadcast_to(arr, (h, w, 3))
    return Image.fromarray((arr * 255).astype(np.uint8), "RGB")


def _bg_plaza(rng, w, h):
    base = _jitter_color(rng, (0.78, 0.75, 0.68), 0.06)
    img = _vertical_gradient(w, h, _jitter_color(rng, (0.85, 0.86, 0.88), 0.05), base)
    d = ImageDraw.Draw(img)
    step = int(rng.integers(h // 10, h // 5))
    line = _c255(base, 0.8)
    for y in range(int(rng.integers(0, step)), h, step):
        d.line([(0, y), (w, y)], fill=line, width=max(1, h // 128))
    for x in range(int(rng.integers(0, step)), w, step):
        d.line([(x, 0), (x, h)], fill=line, width=max(1, h // 128))
    return img


def _bg_park(rng, w, h):
    img = _vertical_gradient(w, h, _jitter_color(rng, (0.55, 0.70, 0.45), 0.06),
                             _jitter_color(rng, (0.25, 0.45, 0.18), 0.05))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h * 0.6), rng.uniform(0.1, 0.3) * w
        d.ellipse([cx - r, cy - r, cx + r, cy + r],
                  fill=_c255(_jitter_color(rng, (0.22, 0.50, 0.20), 0.1)))
    y0 = rng.uniform(0.6, 0.8) * h
    d.rectangle([0, y0, w, h], fill=_c255(_jitter_color(rng, (0.75, 0.66, 0.48), 0.05)))
    return img


def _bg_corridor(rng, w, h):
    wall = _jitter_color(rng, (0.80, 0.70, 0.55), 0.06)
    img = Image.new("RGB", (w, h), _c255(wall))
    d = ImageDraw.Draw(img)
    floor_y = rng.uniform(0.62, 0.75) * h
    d.rectangle([0, floor_y, w, h], fill=_c255(_jitter_color(rng, (0.45, 0.33, 0.22), 0.05)))
    for _ in range(int(rng.integers(1, 3))):
        x = rng.uniform(-0.2, 0.9) * w
        dw = rng.uniform(0.2, 0.45) * w
        d.rectangle([x, rng.uniform(0.1, 0.25) * h, x + dw, floor_y],
                    fill=_c255(_jitter_color(rng, (0.55, 0.38, 0.25), 0.08)))
    return img


def _bg_facade(rng, w, h):
    wall = _jitter_color(rng, (0.62, 0.65, 0.70), 0.08)
    img = Image.new("RGB", (w, h), _c255(wall))
    d = ImageDraw.Draw(img)
    win = _jitter_color(rng, (0.30, 0.38, 0.50), 0.08)
    sx, sy = rng.uniform(0.3, 0.5) * w, rng.uniform(0.15, 0.25) * h
    ox, oy = rng.uniform(0, sx), rng.uniform(0, sy)
    y = oy - sy
    while y < h * 0.7:
        x = ox - sx
        while x < w:
            d.rectangle([x, y, x + 0.6 * sx, y + 0.6 * sy], fill=_c255(win))
            x += sx
        y += sy
    d.rectangle([0, 0.7 * h, w, h], fill=_c255(_jitter_color(rng, (0.50, 0.50, 0.50), 0.06)))
    return img


def _bg_street(rng, w, h):
    img = _vertical_gradient(w, h, _jitter_color(rng, (0.20, 0.22, 0.30), 0.05),
                             _jitter_color(rng, (0.32, 0.32, 0.34), 0.05))
    d = ImageDraw.Draw(img)
    lx, ly, r = rng.uniform(0, w), rng.uniform(0, 0.3 * h), rng.uniform(0.15, 0.3) * w
    d.ellipse([lx - r, ly - r, lx + r, ly + r], fill=_c255((0.85, 0.80, 0.60)))
    y = rng.uniform(0.75, 0.9) * h
    for x in np.arange(rng.uniform(-0.3, 0) * w, w, 0.5 * w):
        d.rectangle([x, y, x + 0.25 * w, y + 0.015 * h], fill=_c255((0.9, 0.9, 0.85)))
    return img


def _bg_carpark(rng, w, h):
    img = _vertical_gradient(w, h, _jitter_color(rng, (0.70, 0.70, 0.72), 0.05),
                             _jitter_color(rng, (0.55, 0.55, 0.56), 0.05))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 3))):
        x, y = rng.uniform(-0.5, 0.8) * w, rng.uniform(0.35, 0.6) * h
        cw, ch = rng.uniform(0.5, 0.9) * w, rng.uniform(0.15, 0.25) * h
        d.rounded_rectangle([x, y, x + cw, y + ch], radius=ch / 4, fill=_c255(_random_color(rng)))
    for x in np.arange(rng.uniform(0, 0.3) * w, w, 0.4 * w):
        d.line([(x, 0.8 * h), (x + 0.1 * w, h)], fill=_c255((0.92, 0.92, 0.9)), width=max(1, h // 100))
    return img


def _choice_str(rng: np.random.Generator, options):
    return options[int(rng.integers(0, len(options)))]


OWN_BACKGROUND_PROB = 0.6
BACKGROUNDS = {"plaza": _bg_plaza, "park": _bg_park, "corridor": _bg_corridor,
               "facade": _bg_facade, "street": _bg_street, "carpark": _bg_carpark}


def draw_background(rng: np.random.Generator, camera: Camera, w: int, h: int) -> Image.Image:
    """A background plus 1-4 clutter shapes (bins, signs, bushes...).

    The style is the camera's own with probability ``OWN_BACKGROUND_PROB``, otherwise another
    camera's: each camera keeps a recognisable look, but the background alone does not give
    the camera away (which would make same-camera gallery images the nearest neighbours).
    """
    style = camera.background
    if rng.random() >= OWN_BACKGROUND_PROB:
        style = _choice_str(rng, [b for b in BACKGROUNDS if b != camera.background])
    img = BACKGROUNDS[style](rng, w, h)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):
        x, y = rng.uniform(-0.2, 1.0) * w, rng.uniform(0.0, 1.0) * h
        sw, sh = rng.uniform(0.08, 0.4) * w, rng.uniform(0.04, 0.3) * h
        fill = _c255(_muted_color(rng) if rng.random() < 0.75 else _random_color(rng))
        if rng.random() < 0.5:
            d.rectangle([x, y, x + sw, y + sh], fill=fill)
        else:
            d.ellipse([x, y, x + sw, y + sh], fill=fill)
    return img


# ---------------------------------------------------------------------------------------------
# The pedestrian
# ---------------------------------------------------------------------------------------------

class _Frame:
    """Person-relative drawing: (u, v) in units of the person height, v=0 head top, v=1 feet."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, ph: float):
        self.d, self.cx, self.top, self.ph = draw, cx, top, ph

    def xy(self, u: float, v: float) -> Tuple[float, float]:
        return self.cx + u * self.ph, self.top + v * self.ph

    def box(self, u0, v0, u1, v1):
        (x0, y0), (x1, y1) = self.xy(min(u0, u1), min(v0, v1)), self.xy(max(u0, u1), max(v0, v1))
        return [x0, y0, x1, y1]

    def rect(self, u0, v0, u1, v1, fill):
        self.d.rectangle(self.box(u0, v0, u1, v1), fill=fill)

    def ellipse(self, u0, v0, u1, v1, fill):
        self.d.ellipse(self.box(u0, v0, u1, v1), fill=fill)

    def chord(self, u0, v0, u1, v1, start, end, fill):
        self.d.chord(self.box(u0, v0, u1, v1), start, end, fill=fill)

    def poly(self, points, fill):
        self.d.polygon([self.xy(u, v) for u, v in points], fill=fill)

    def line(self, points, fill, width_u):
        self.d.line([self.xy(u, v) for u, v in points], fill=fill,
                    width=max(1, int(round(width_u * self.ph))))


def _pattern_layer(size, box, pattern: str, base: Color, second: Color, period: float):
    """A full-canvas image holding the garment colour with its pattern inside ``box``."""
    img = Image.new("RGB", size, _c255(base))
    if pattern == "plain":
        return img
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = box
    step = max(2.0, period)
    half = step / 2
    if pattern == "horizontal_stripes":
        for y in np.arange(y0, y1, step):
            d.rectangle([x0, y, x1, y + half - 1], fill=_c255(second))
    elif pattern == "vertical_stripes":
        for x in np.arange(x0, x1, step):
            d.rectangle([x, y0, x + half - 1, y1], fill=_c255(second))
    elif pattern == "checks":
        for i, y in enumerate(np.arange(y0, y1, half)):
            for j, x in enumerate(np.arange(x0, x1, half)):
                if (i + j) % 2 == 0:
                    d.rectangle([x, y, x + half - 1, y + half - 1], fill=_c255(second))
    else:
        raise ValueError(f"unknown upper pattern '{pattern}'")
    return img


def draw_person(img: Image.Image, attrs: dict, view: str, rng: np.random.Generator,
                cx: float, top: float, ph: float) -> None:
    """Draw one pedestrian with identity attributes ``attrs`` onto ``img`` (in place).

    Args:
        img: the supersampled canvas.
        attrs: identity attributes (see ``identities.sample_attributes``).
        view: 'front', 'back' or 'side'.
        rng: per-image generator (side-view facing, stride, small pose changes).
        cx, top, ph: horizontal centre, head-top y and height of the person, in canvas pixels.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view '{view}' (expected one of {VIEWS})")
    d = ImageDraw.Draw(img)
    f = _Frame(d, cx, top, ph)
    side = view == "side"
    facing = 1.0 if rng.random() < 0.5 else -1.0      # side view: +1 looks right
    # In the front view the person's right hand is on the image left.
    right = {"front": -1.0, "back": 1.0, "side": facing}[view]

    build = BUILDS[attrs["build"]] * (0.92 if attrs["gender"] == "woman" else 1.0)
    tw = 0.115 * build * (0.62 if side else 1.0)         # half shoulder width
    skin = _c255(SKIN_TONES[attrs["skin"]])
    hair = _c255(HAIR_COLORS[attrs["hair_color"]])
    upper = COLORS[attrs["upper_color"]]
    lower = _c255(COLORS[attrs["lower_color"]])
    shoes = _c255(COLORS[attrs["shoes_color"]])
    sleeve = _c255(upper, 0.88)
    long_hair = attrs["hair_length"] == "long"
    bag, hat = attrs["bag"], attrs["hat"]
    bag_col = _c255(COLORS[bag["color"]]) if bag["type"] != "none" else None
    bag_dark = _c255(COLORS[bag["color"]], 0.7) if bag["type"] != "none" else None

    # Long hair falls behind the shoulders: drawn before the body in the front view.
    if long_hair and view == "front":
        f.rect(-0.06, 0.04, 0.06, 0.24, hair)

    # Legs / lower garment and shoes.
    stride = rng.uniform(0.02, 0.05) if side else 0.0
    leg_c = 0.048 * build if not side else 0.0
    leg_w = 0.042 * min(build, 1.1)
    hip_w = 0.92 * tw
    lower_type = attrs["lower_type"]
    cloth_end = {"trousers": 0.935, "shorts": 0.68, "skirt": 0.72}[lower_type]
    for k, sign in enumerate((-1.0, 1.0)):
        foot_u = sign * leg_c + (sign * stride * facing if side else 0.0)
        knee_u = sign * leg_c + (sign * stride * 0.5 * facing if side else 0.0)
        leg = [(sign * leg_c - leg_w, 0.55), (sign * leg_c + leg_w, 0.55),
               (foot_u + leg_w * 0.85, 0.94), (foot_u - leg_w * 0.85, 0.94)]
        f.poly(leg, skin if lower_type != "trousers" else lower)
        if lower_type == "shorts":
            f.poly([(sign * leg_c - leg_w * 1.1, 0.55), (sign * leg_c + leg_w * 1.1, 0.55),
                    (knee_u + leg_w * 1.05, cloth_end), (knee_u - leg_w * 1.05, cloth_end)], lower)
        shoe_len = 0.075 if side else 0.05
        s0 = foot_u - (0.015 * facing if side else shoe_len / 2)
        s1 = foot_u + (shoe_len * facing if side else shoe_len / 2)
        f.ellipse(s0, 0.925, s1, 0.995, shoes)
    if lower_type == "skirt":
        f.poly([(-hip_w, 0.49), (hip_w, 0.49), (hip_w * 1.35, cloth_end), (-hip_w * 1.35, cloth_end)],
               lower)
    else:
        f.rect(-hip_w, 0.49, hip_w, 0.59, lower)

    # Backpack behind the body (side view) is drawn before the torso.
    if bag["type"] == "backpack" and side:
        f.rect(-facing * (tw + 0.075), 0.18, -facing * (tw - 0.02), 0.46, bag_col)

    # Upper garment with its pattern, composited through a torso mask.
    torso = [(-tw, 0.155), (tw, 0.155), (tw * 0.9, 0.34), (hip_w, 0.505), (-hip_w, 0.505),
             (-tw * 0.9, 0.34)]
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).polygon([f.xy(u, v) for u, v in torso], fill=255)
    box = f.box(-tw, 0.155, tw, 0.505)
    second = COLORS[attrs["pattern_color"]] if attrs["pattern_color"] else upper
    layer = _pattern_layer(img.size, box, attrs["upper_pattern"], upper, second, 0.045 * ph)
    img.paste(layer, (0, 0), mask)
    f.rect(-0.022, 0.13, 0.022, 0.165, skin)  # neck

    # Chest logo: front view only.
    if attrs["logo"] != "none" and view == "front":
        lu, lv, r = -right * 0.045, 0.24, 0.028
        f.poly([(lu, lv - r), (lu + r, lv), (lu, lv + r), (lu - r, lv)], _c255(COLORS[attrs["logo"]]))

    # Arms (sleeves) and hands.
    arms = (0.0,) if side else (-1.0, 1.0)
    swing = rng.uniform(-0.03, 0.03)
    for sign in arms:
        su = sign * (tw + 0.02) if not side else 0.0
        hu = su + (sign * 0.012 if not side else swing * facing)
        f.poly([(su - 0.026, 0.165), (su + 0.026, 0.165), (hu + 0.022, 0.47), (hu - 0.022, 0.47)],
               sleeve)
        f.ellipse(hu - 0.022, 0.46, hu + 0.022, 0.52, skin)

    # Bags in front of the body.
    if bag["type"] == "backpack" and view == "back":
        f.rect(-0.8 * tw, 0.18, 0.8 * tw, 0.47, bag_col)
        f.rect(-0.55 * tw, 0.36, 0.55 * tw, 0.45, bag_dark)     # front pocket
    elif bag["type"] == "backpack" and view == "front":
        for sign in (-1.0, 1.0):
            f.line([(sign * 0.6 * tw, 0.16), (sign * 0.55 * tw, 0.42)], bag_col, 0.02)
    elif bag["type"] == "backpack" and side:
        f.line([(0.0, 0.16), (-facing * 0.01, 0.42)], bag_col, 0.02)
    elif bag["type"] == "shoulder_bag":
        strap_from = right * 0.7 * tw if not side else 0.0
        bag_u = -right * (tw + 0.015) if not side else -facing * 0.02
        f.line([(strap_from, 0.16), (bag_u, 0.44)], bag_col, 0.015)
        f.rect(bag_u - 0.05, 0.42, bag_u + 0.05, 0.535, bag_col)
    elif bag["type"] == "handbag":
        hand_u = right * (tw + 0.035) if not side else swing * facing
        f.line([(hand_u - 0.02, 0.47), (hand_u, 0.5), (hand_u + 0.02, 0.47)], bag_dark, 0.01)
        f.rect(hand_u - 0.045, 0.49, hand_u + 0.045, 0.585, bag_col)

    # Head, face, hair, hat.
    hw = 0.05
    if view == "front":
        f.ellipse(-hw, 0.01, hw, 0.14, skin)
        f.chord(-hw, 0.005, hw, 0.11, 180, 360, hair)
    elif view == "back":
        f.ellipse(-hw, 0.01, hw, 0.14, hair)
        if long_hair:
            f.rect(-0.058, 0.07, 0.058, 0.26, hair)
    else:
        f.ellipse(-hw * 0.95, 0.01, hw * 0.95, 0.14, skin)
        f.chord(-hw * 0.95, 0.005, hw * 0.95, 0.12, 90 if facing < 0 else 180,
                360 if facing < 0 else 90, hair)
        f.chord(-hw * 0.95, 0.005, hw * 0.95, 0.11, 180, 360, hair)
        if long_hair:
            f.rect(-facing * 0.055, 0.06, -facing * 0.005, 0.25, hair)
    if hat["type"] != "none":
        hat_c = _c255(COLORS[hat["color"]])
        if hat["type"] == "cap":
            f.chord(-hw * 1.05, -0.005, hw * 1.05, 0.10, 180, 360, hat_c)
            if view == "front":
                f.ellipse(-hw * 1.2, 0.035, hw * 1.2, 0.06, hat_c)
            elif side:
                f.rect(0.0, 0.038, facing * (hw + 0.045), 0.055, hat_c)
        else:  # beanie: a taller dome with a folded band
            f.chord(-hw * 1.08, -0.025, hw * 1.08, 0.12, 180, 360, hat_c)
            f.rect(-hw * 1.08, 0.035, hw * 1.08, 0.06, _c255(COLORS[hat["color"]], 0.8))


def draw_occluder(img: Image.Image, rng: np.random.Generator, cx: float, top: float,
                  ph: float) -> str:
    """Cover part of the person: a low wall / car from below or a pole / passer-by from a side.

    Returns the occluder kind ('bottom' or 'side').
    """
    w, h = img.size
    d = ImageDraw.Draw(img)
    fill = _c255(_random_color(rng))
    if rng.random() < 0.55:
        y0 = top + rng.uniform(0.55, 0.8) * ph
        x0 = rng.uniform(-0.2, 0.2) * w
        d.rectangle([x0, y0, x0 + rng.uniform(0.9, 1.4) * w, h], fill=fill)
        d.line([(0, y0), (w, y0)], fill=_c255(_random_color(rng)), width=max(1, h // 60))
        return "bottom"
    cover = rng.uniform(0.25, 0.5) * 0.26 * ph           # fraction of the body width
    if rng.random() < 0.5:
        x_edge = cx - 0.13 * ph + cover
        d.rectangle([0, 0, x_edge, h], fill=fill)
    else:
        x_edge = cx + 0.13 * ph - cover
        d.rectangle([x_edge, 0, w, h], fill=fill)
    return "side"


# ---------------------------------------------------------------------------------------------
# The camera
# ---------------------------------------------------------------------------------------------

def apply_camera(img: Image.Image, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """Illumination, blur and noise of ``camera`` on an output-size image; returns uint8 HxWx3.

    x' = clip(((x * cast * c_jitter * gain * e_jitter * gradient) ^ gamma) + noise), with
    per-image exposure jitter e ~ exp(N(0, 0.12)), cast jitter 1 + N(0, 0.03) per channel and a
    linear light gradient of +-25 % across the image.
    """
    radius = rng.uniform(0.0, camera.blur)
    if radius > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    x = np.asarray(img, dtype=np.float64) / 255.0
    h, w = x.shape[:2]
    cast = np.array(camera.cast) * (1.0 + rng.normal(0, 0.03, size=3))
    exposure = camera.gain * float(np.exp(rng.normal(0, 0.12)))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5))
    gradient = 1.0 + rng.uniform(0.0, 0.5) * ramp
    x = np.clip(x * cast * exposure * gradient[..., None], 0.0, 1.0) ** camera.gamma
    # Low-frequency texture (uneven lighting / surface) and sensor noise.
    coarse = rng.uniform(0.9, 1.1, size=(max(2, h // 16), max(2, w // 16))).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse, "F").resize((w, h), Image.BILINEAR))
    x = x * texture[..., None] + rng.normal(0.0, camera.noise, size=x.shape)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_person(attrs: dict, camera: Camera, view: str, occluded: bool,
                  rng: np.random.Generator, size: Tuple[int, int]) -> np.ndarray:
    """One image of a person (identity or distractor): returns uint8 (H, W, 3).

    Args:
        attrs: identity attributes.
        camera: the camera (background style, illumination).
        view: 'front', 'back' or 'side'.
        occluded: draw an occluder over part of the body.
        rng: the image's own generator.
        size: output (height, width).
    """
    h, w = size
    sh, sw = h * SUPERSAMPLE, w * SUPERSAMPLE
    canvas = draw_background(rng, camera, sw, sh)
    # Scale / position jitter: the detector box is loose or tight, the person off-centre.
    ph = sh * HEIGHTS[attrs["height"]] * rng.uniform(0.93, 1.05)
    top = (sh - ph) * rng.uniform(0.25, 0.75) + rng.normal(0, 0.01) * sh
    cx = sw * (0.5 + rng.uniform(-0.08, 0.08))
    draw_person(canvas, attrs, view, rng, cx, top, ph)
    if occluded:
        draw_occluder(canvas, rng, cx, top, ph)
    small = canvas.resize((w, h), Image.BOX)
    return apply_camera(small, camera, rng)


def render_junk(camera: Camera, rng: np.random.Generator, size: Tuple[int, int],
                person: Optional[dict] = None) -> np.ndarray:
    """A junk detection (pid -1): an empty background box or an extreme crop of a person."""
    h, w = size
    sh, sw = h * SUPERSAMPLE, w * SUPERSAMPLE
    canvas = draw_background(rng, camera, sw, sh)
    if person is not None and rng.random() < 0.6:
        # Zoomed so that only a fragment of the body is in the box.
        ph = sh * rng.uniform(2.5, 4.0)
        top = -rng.uniform(0.1, 0.8) * ph
        draw_person(canvas, person, VIEWS[int(rng.integers(0, 3))], rng,
                    sw * rng.uniform(0.0, 1.0), top, ph)
    small = canvas.resize((w, h), Image.BOX)
    return apply_camera(small, camera, rng)


def mean_luma(rgb: np.ndarray) -> float:
    """Mean BT.709 luma 0.2126 R + 0.7152 G + 0.0722 B of a uint8 RGB image, on [0, 1]."""
    return float((rgb.reshape(-1, 3).astype(np.float64) / 255.0 @ BT709).mean())
