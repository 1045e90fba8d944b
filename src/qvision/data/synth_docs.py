"""Synthetic academic-paper pages with exact layout labels (COCO), to evaluate document-layout
detectors such as PP-PicoDet trained on CDLA, whose 10 classes (in order) are ``CATEGORIES``.

Deterministic by seed: page i draws from its own generator seeded with (seed, i). Each block is
rendered on its own white tile the width of its column; its label box is the tile's ink (a
photo's extent) grown by ``PAD``. Tiles are stacked down the columns at least ``GAP`` apart, so
no two boxes overlap. As CDLA labels pages (and PP-PicoDet predicts), a column's run of
paragraphs is one text box, its references one reference box, and an equation's box leaves out
its number. Fonts, formulas and plots come from matplotlib (the ``report`` extra), photos from
scikit-image (the ``zoo`` extra); both are bundled, nothing is downloaded.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from qvision.data.synth_text import WORDS, _text, new_folder
from qvision.errors import MissingExtraError, QVisionError

CATEGORIES = ("text", "title", "figure", "figure_caption", "table", "table_caption", "header",
              "footer", "reference", "equation")  # fmt: skip
TEXT, TITLE, FIGURE, FIG_CAP, TABLE, TAB_CAP, HEADER, FOOTER, REFERENCE, EQUATION = range(1, 11)
WIDTH, HEIGHT = 816, 1056  # US Letter at 96 dpi
PAD = 2  # pixels around a block's ink in its label box
GAP = 2 * PAD + 3  # least space between tiles, so padded boxes stay apart
ANNOTATIONS = "annotations.json"
FAMILIES = {  # regular, bold, italic that matplotlib ships (STIX looks like Times, cm like LaTeX)
    "times": ("STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic"),
    "cm": ("cmr10", "cmb10", "cmti10"),
    "serif": ("DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic"),
    "sans": ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique"),
}
PAPER_WORDS = """method network results training accuracy proposed layer feature features
    performance dataset approach learning detection shown baseline error using which we our
    each these can than more two between all also"""
PROSE = np.array(WORDS[:23] * 3 + WORDS[23:] + PAPER_WORDS.split())  # function words: 3x as often
SECTIONS = ("Introduction", "Related Work", "Method", "Experiments", "Results", "Discussion",
            "Conclusion", "Experimental Setup", "Ablation Study", "Implementation Details",
            "Datasets", "Evaluation Metrics", "Background", "Analysis")  # fmt: skip
VENUES = ("Journal of Vision Computing", "Pattern Recognition Letters", "Acta Automatica Sinica",
          "IEEE Transactions on Image Processing", "Computer Engineering and Applications",
          "Proceedings of the Conference on Computer Vision", "Journal of Software")  # fmt: skip
NAMES = ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Smith", "Kumar", "Garcia", "Brown")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "horse", "cat",
          "immunohistochemistry", "hubble_deep_field", "retina", "brick", "clock", "cell")  # fmt: skip
FORMULAS = (
    r"\mathcal{L} = -\sum_{i=1}^{N} y_i \log \hat{y}_i",
    r"f(x) = \frac{1}{\sqrt{2\pi}\sigma} \exp\left(-\frac{(x-\mu)^2}{2\sigma^2}\right)",
    r"y = W x + b, \quad W \in \mathbb{R}^{m \times n}",
    r"\hat{x} = s \cdot \mathrm{clip}\left(\mathrm{round}\left(\frac{x}{s}\right) + z, 0, 255\right)",
    r"\mathrm{IoU}(A, B) = \frac{|A \cap B|}{|A \cup B|}",
    r"\mathrm{softmax}(z)_j = \frac{e^{z_j}}{\sum_{k=1}^{K} e^{z_k}}",
    r"\frac{\partial E}{\partial w_{ij}} = \delta_j \, o_i",
    r"\mathbf{h}_t = \tanh(W_h \mathbf{h}_{t-1} + W_x \mathbf{x}_t + b)",
    r"\int_0^\infty e^{-\lambda t} \, dt = \frac{1}{\lambda}",
    r"\|x - y\|_2^2 = \sum_{i} (x_i - y_i)^2",
    r"P(A|B) = \frac{P(B|A) \, P(A)}{P(B)}",
    r"\mathrm{mAP} = \frac{1}{C} \sum_{c=1}^{C} \int_0^1 p_c(r) \, dr",
    r"s = \frac{\max(x) - \min(x)}{2^b - 1}",
    r"\sigma^2 = \frac{1}{n-1} \sum_{i=1}^{n} (x_i - \bar{x})^2",
    r"F_1 = \frac{2 P R}{P + R}, \quad P = \frac{TP}{TP + FP}",
)
KINDS = {"paragraph": 0.5, "heading": 0.12, "figure": 0.14, "table": 0.09, "equation": 0.15}
Block = tuple[int, np.ndarray, tuple | None]  # category, white tile with ink, label box in it


def _mpl():
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("matplotlib", "report", "fonts and formulas for pages") from None
    return matplotlib


@lru_cache(maxsize=256)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(f"{_mpl().get_data_path()}/fonts/ttf/{name}.ttf", size)


def _height(font: ImageFont.FreeTypeFont) -> int:
    # cm fonts under-report their descent; the ink decides
    return max(sum(font.getmetrics()), font.getbbox("Ag[j](|")[3]) + 1


@cache
def _photo(name: str) -> Image.Image:
    try:
        from skimage import data
    except ImportError:
        raise MissingExtraError("scikit-image", "zoo", "photos for pages") from None
    return Image.fromarray(getattr(data, name)()).convert("RGB")


@lru_cache(maxsize=1)
def _math():
    _mpl()
    from matplotlib.mathtext import MathTextParser

    return MathTextParser("agg")


def _words(rng: np.random.Generator, n: int) -> list[str]:
    """Prose: sentences from the shared word list, with the odd comma, number or citation."""
    out: list[str] = []
    while len(out) < n:
        s = [str(w) for w in rng.choice(PROSE, int(rng.integers(5, 19)))]
        s[0] = s[0].capitalize()
        for k in range(1, len(s) - 1):
            r = rng.random()
            if r < 0.03:
                s[k] = f"{rng.uniform(0, 100):.1f}%"
            s[k] += "," if r > 0.94 else f" [{rng.integers(1, 40)}]" if r > 0.91 else ""
        out += s[:-1] + [s[-1] + "."]
    return out


@lru_cache(maxsize=20000)
def _word(font: ImageFont.FreeTypeFont, word: str) -> tuple[Image.Image, int, int, float]:
    """A word's ink mask, its offset and advance: words repeat, so each renders once."""
    left, top, right, bottom = font.getbbox(word)
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text((-left, -top), word, font=font, fill=255)
    return mask, left, top, font.getlength(word)


def _ink(dark: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _wrap(words: list[str], font, width: int, first: int = 0) -> list[list[str]]:
    """Greedy line breaks; ``first`` indents the first line."""
    lines, line, used, space = [], [], first, font.getlength(" ")
    for w in words:
        lw = _word(font, w)[3]
        if line and used + space + lw > width:
            lines.append(line)
            line, used = [], 0
        used += (space if line else 0) + lw
        line.append(w)
    return lines + [line] if line else lines


def _draw(lines, font, width: int, lead: int, ink, align="justify", first=0, hang=0, full=False):
    """Lines of words on a white tile; 'justify' spreads each line but the last (all if
    ``full``) to the width; ``first`` indents the first line, ``hang`` the others."""
    img = Image.new("RGB", (width, lead * (len(lines) - 1) + _height(font)), "white")
    space = font.getlength(" ")
    for i, line in enumerate(lines):
        x, gap = float(first if i == 0 else hang), space
        words = [_word(font, w) for w in line]
        widths = [w[3] for w in words]
        free = width - x - sum(widths) - space * (len(line) - 1)
        if align == "justify" and (full or i < len(lines) - 1) and len(line) > 1:
            gap += free / (len(line) - 1)
        elif align == "center":
            x += free / 2
        for mask, left, top, lw in words:
            img.paste(ink, (int(round(x)) + left, i * lead + top), mask)
            x += lw + gap
    return np.asarray(img)


class _Page:
    """One page's style and canvas, the blocks it can make, and the boxes placed on it."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        fam = str(rng.choice(list(FAMILIES), p=[0.45, 0.25, 0.15, 0.15]))
        self.regular, self.bold, self.italic = FAMILIES[fam]
        self.size = int(rng.integers(11, 17))
        self.lead = int(round(self.size * rng.uniform(1.15, 1.45)))
        self.ink = (int(rng.integers(0, 40)),) * 3
        tint = rng.integers(0, 8, 3) if rng.random() < 0.4 else np.zeros(3, int)
        self.canvas = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        self.canvas[:] = 255 - tint
        self.boxes: list[tuple[int, list[int]]] = []
        self.fig, self.tab, self.eq = (int(rng.integers(1, 8)) for _ in range(3))
        self.indent = int(rng.choice([0, self.size, 2 * self.size]))
        self.numbering = str(rng.choice(["arabic", "roman", "none"]))

    def font(self, kind: str = "regular", scale: float = 1.0) -> ImageFont.FreeTypeFont:
        return _font(getattr(self, kind), max(8, int(round(self.size * scale))))

    def put(self, cat: int, tile: np.ndarray, x: int, y: int, box=None, join=False) -> None:
        """Darken the canvas with ``tile`` at (x, y) and label ``box`` (tile pixels; default:
        its ink); ``join`` grows the last box instead, as CDLA boxes a run of paragraphs or
        a list of references as one block."""
        h, w = tile.shape[:2]
        np.minimum(self.canvas[y : y + h, x : x + w], tile, out=self.canvas[y : y + h, x : x + w])
        if box is None:
            box = _ink(np.minimum(np.minimum(tile[..., 0], tile[..., 1]), tile[..., 2]) < 160)
        x0, y0 = max(0, x + int(box[0]) - PAD), max(0, y + int(box[1]) - PAD)
        x1, y1 = min(WIDTH, x + int(box[2]) + PAD), min(HEIGHT, y + int(box[3]) + PAD)
        if join and self.boxes and self.boxes[-1][0] == cat:
            a, b, c, d = self.boxes.pop()[1]
            x0, y0, x1, y1 = min(x0, a), min(y0, b), max(x1, a + c), max(y1, b + d)
        self.boxes.append((cat, [x0, y0, x1 - x0, y1 - y0]))

    # blocks: each returns the tiles to stack, or None when they cannot fit in ``room``
    def paragraph(self, width: int, room: int, scale: float = 1.0) -> list[Block] | None:
        font, lead = self.font(scale=scale), int(round(self.lead * scale))
        words = _words(self.rng, int(self.rng.integers(8, 20)) * width // 90)
        lines = _wrap(words, font, width, self.indent)
        fit = (room - _height(font)) // lead + 1
        if fit < 2:
            return None
        # a paragraph that runs on into the next column is justified to its last line
        tile = _draw(
            lines[:fit], font, width, lead, self.ink, first=self.indent, full=len(lines) > fit
        )
        return [(TEXT, tile, None)]

    def heading(self, width: int, name: str | None = None) -> list[Block]:
        rng, roman = self.rng, self.numbering == "roman"  # IEEE style: centred capitals
        n, sub = int(rng.integers(1, 7)), int(rng.integers(1, 5))
        number = ["I.", "II.", "III.", "IV.", "V.", "VI."][n - 1] if roman else f"{n}"
        number += f".{sub}" if self.numbering == "arabic" and rng.random() < 0.4 else ""
        if name is None:
            name = str(rng.choice(SECTIONS))
            name = name if self.numbering == "none" else f"{number} {name}"
        name = name.upper() if roman else name
        font = self.font("bold", float(rng.uniform(1.05, 1.35)))
        return [
            (
                TITLE,
                _draw([name.split()], font, width, 0, self.ink, "center" if roman else "left"),
                None,
            )
        ]

    def caption(self, label: str, width: int, cat: int) -> Block:
        font = self.font(str(self.rng.choice(["regular", "italic"])), 0.9)
        lines = _wrap([label] + _words(self.rng, int(self.rng.integers(4, 30)))[:30], font, width)
        align = "center" if len(lines) == 1 else "justify"
        return (cat, _draw(lines, font, width, int(self.lead * 0.9), self.ink, align), None)

    def figure(self, width: int, room: int) -> list[Block] | None:
        rng, extent = self.rng, None
        w = min(int(width * rng.uniform(0.55, 0.95)), 460)  # papers seldom blow a chart up
        if rng.random() < 0.55:  # one photo, or two side by side with (a) (b) beneath
            k = 1 if rng.random() < 0.7 else 2
            pics = [_photo(str(p)) for p in rng.choice(PHOTOS, k, replace=False)]
            cell = (w - (k - 1) * 10) // k
            h = min(int(cell * pics[0].height / pics[0].width), HEIGHT // 3)
            cell = min(cell, int(h * pics[0].width / pics[0].height))
            label_h = _height(self.font()) + 4 if k > 1 else 0
            tile = Image.new("RGB", (width, h + label_h), "white")
            draw, x0 = ImageDraw.Draw(tile), (width - k * cell - (k - 1) * 10) // 2
            for j, pic in enumerate(pics):
                pic = pic.resize((cell, h), Image.Resampling.BILINEAR)
                x = x0 + j * (cell + 10)
                tile.paste(pic.convert("L").convert("RGB") if rng.random() < 0.3 else pic, (x, 0))
                if k > 1:
                    draw.text((x + cell // 2, h + 3), f"({'ab'[j]})", self.ink, self.font(), "ma")
            bottom = _ink(np.asarray(tile)[h:, :, 0] < 160)[3] + h if k > 1 else h
            art, extent = np.asarray(tile), (x0, 0, x0 + k * cell + (k - 1) * 10, bottom)
        else:
            art = _plot(rng, w, int(w * rng.uniform(0.55, 0.8)), width)
        label = f"Figure {self.fig}:" if rng.random() < 0.6 else f"Fig. {self.fig}."
        cap = self.caption(label, width, FIG_CAP)
        if art.shape[0] + GAP + cap[1].shape[0] > room:
            return None
        self.fig += 1
        return [(FIGURE, art, extent), cap]

    def table(self, width: int, room: int) -> list[Block] | None:
        rng, font = self.rng, self.font(scale=0.9)
        rows, cols = int(rng.integers(3, 9)), int(rng.integers(3, 7))
        cells = [[_text(rng, (1, 2)).title() for _ in range(cols)]]
        for _ in range(rows - 1):
            cells.append(
                [_text(rng, (1, 1))] + [f"{rng.uniform(1, 99):.1f}" for _ in range(cols - 1)]
            )
        widths = [max(font.getlength(r[c]) for r in cells) + 2 * font.size for c in range(cols)]
        while sum(widths) > width - 2 and len(widths) > 2:  # drop columns until it fits
            widths.pop()
        cols, rh = len(widths), int(font.size * 1.7)
        tw, th = int(sum(widths)), rh * rows
        cap = self.caption(f"Table {self.tab}:", width, TAB_CAP)
        if tw > width - 2 or th + 3 + GAP + cap[1].shape[0] > room:
            return None
        img = Image.new("RGB", (width, th + 3), "white")
        draw, x0, grid = ImageDraw.Draw(img), (width - tw) // 2, rng.random() < 0.4
        xs = [x0 + int(sum(widths[:c])) for c in range(cols + 1)]
        for r, row in enumerate(cells):
            for c in range(cols):
                draw.text(
                    ((xs[c] + xs[c + 1]) / 2, r * rh + rh / 2 + 1), row[c], self.ink, font, "mm"
                )
        for r in range(rows + 1) if grid else (0, 1, rows):  # full grid, or booktabs' three rules
            draw.line(
                [(x0, r * rh + 1), (x0 + tw, r * rh + 1)], self.ink, 1 if grid or r == 1 else 2
            )
        for x in xs if grid else ():
            draw.line([(x, 1), (x, th + 1)], self.ink, 1)
        self.tab += 1
        return [cap, (TABLE, np.asarray(img), None)]

    def equation(self, width: int, room: int) -> list[Block] | None:
        from matplotlib.font_manager import FontProperties

        rng = self.rng
        prop = FontProperties(size=self.size * 0.8, math_fontfamily=str(rng.choice(["cm", "stix"])))
        ink = np.asarray(_math().parse(f"${rng.choice(FORMULAS)}$", 96, prop).image)
        h, w = ink.shape
        if w > width - 6 * self.size or h + 4 > room:
            return None
        tile = np.full((max(h, _height(self.font())) + 4, width, 3), 255, np.uint8)
        x, y = (width - w) // 2, (tile.shape[0] - h) // 2
        tile[y : y + h, x : x + w] = 255 - ink[..., None].astype(int) * (255 - self.ink[0]) // 255
        img, (a, b, c, d) = Image.fromarray(tile), _ink(ink > 95)
        if rng.random() < 0.75:  # numbered at the right margin; PicoDet-CDLA leaves it out
            ImageDraw.Draw(img).text(
                (width - 1, y + h / 2), f"({self.eq})", self.ink, self.font(), "rm"
            )
            self.eq += 1
        return [(EQUATION, np.asarray(img), (x + a, y + b, x + c, y + d))]

    def reference(self, width: int, room: int, k: int) -> list[Block] | None:
        rng, font = self.rng, self.font(scale=0.88)
        people = [
            f"{chr(65 + rng.integers(0, 26))}. {rng.choice(NAMES)}"
            for _ in range(rng.integers(1, 5))
        ]
        venue = f"In {rng.choice(VENUES)}, {rng.integers(1995, 2025)}, pp. {rng.integers(1, 900)}."
        words = f"[{k}] {', '.join(people)}.".split() + _words(rng, int(rng.integers(5, 12)))
        hang = int(font.getlength(f"[{k}] "))
        lines = _wrap(words + venue.split(), font, width - hang)
        tile = _draw(lines, font, width, int(self.lead * 0.88), self.ink, hang=hang)
        return None if tile.shape[0] > room else [(REFERENCE, tile, None)]


def _plot(rng: np.random.Generator, w: int, h: int, width: int) -> np.ndarray:
    """A line or bar chart as papers have them, centred on a white tile ``width`` wide."""
    _mpl()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w / 96, h / 96), dpi=96)
    ax = fig.add_subplot()
    x = np.arange(1, int(rng.integers(5, 12)))
    bars = rng.random() < 0.3
    for k in range(int(rng.integers(1, 4))):
        y = np.cumsum(rng.uniform(0, 1, len(x))) + rng.uniform(0, 3)
        if bars:
            ax.bar(x + k * 0.25, y, 0.25, label=_text(rng, (1, 2)))
        else:
            ax.plot(x, y, marker="os^"[k], ms=3, lw=1, label=_text(rng, (1, 2)))
    ax.set_xlabel(_text(rng, (1, 2)), fontsize=8)
    ax.set_ylabel(_text(rng, (1, 1)), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    # fixed pixel margins for the tick and axis labels: tight_layout would double the time
    fig.subplots_adjust(44 / w, 34 / h, 1 - 6 / w, 1 - 6 / h)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    art = np.asarray(canvas.buffer_rgba())[..., :3]
    tile = np.full((art.shape[0], width, 3), 255, np.uint8)
    x0 = (width - art.shape[1]) // 2
    tile[:, x0 : x0 + art.shape[1]] = art
    return tile


def render_doc_page(rng: np.random.Generator) -> tuple[Image.Image, list[tuple[int, list[int]]]]:
    """One page and its (category id, [x, y, w, h]) boxes."""
    page, r = _Page(rng), rng.random
    margin, top = int(rng.integers(60, 81)), int(rng.integers(72, 100))
    bottom, full = HEIGHT - int(rng.integers(72, 100)), WIDTH - 2 * margin
    small = page.font(str(rng.choice(["regular", "italic"])), 0.8)
    if r() < 0.85:  # header: journal line, maybe with the page number; often a rule under it
        text = f"{rng.choice(VENUES)}, Vol. {rng.integers(1, 40)}, No. {rng.integers(1, 13)}"
        text = f"{rng.integers(1, 999)}   {text}" if r() < 0.4 else text
        tile = _draw([text.split()], small, full, 0, page.ink, str(rng.choice(["left", "center"])))
        page.put(HEADER, tile, margin, top - int(rng.integers(30, 46)))
        if r() < 0.6:
            x, y, w, h = page.boxes[-1][1]
            page.canvas[y + h + 2, margin : WIDTH - margin] = page.ink
    if r() < 0.85:  # footer: a page number or a copyright line
        n, c = int(rng.integers(1, 999)), "(c)" if page.regular == "cmr10" else "©"
        text = str(
            rng.choice([n, f"- {n} -", f"{c} {rng.integers(1995, 2025)} {rng.choice(VENUES)}"])
        )
        tile = _draw([text.split()], small, full, 0, page.ink, "center")
        page.put(FOOTER, tile, margin, bottom + int(rng.integers(16, 32)))
    stack: list[Block] = []
    if r() < 0.3:  # a first page: the paper's title, authors, affiliation, abstract
        big = page.font("bold", float(rng.uniform(1.6, 2.2)))
        title = [str(w).capitalize() for w in rng.choice(PROSE, rng.integers(4, 13))]
        names = ", ".join(
            f"{rng.choice(NAMES)} {rng.choice(NAMES)}" for _ in range(rng.integers(2, 6))
        )
        aff = f"School of Computer Science, {rng.choice(NAMES)} University, China"
        for cat, lines, font in (
            (TITLE, _wrap(title, big, full)[:2], big),
            (TEXT, [names.split()], page.font(scale=1.1)),
            (TEXT, [aff.split()], page.font("italic", 0.9)),
        ):
            tile = _draw(lines, font, full, int(font.size * 1.25), page.ink, "center")
            stack.append((cat, tile, None))
        stack += page.paragraph(full - 2 * page.size, HEIGHT // 3, 0.9) or []
    two = r() < 0.6
    if two and r() < 0.2:  # a float spanning both columns
        stack += (page.figure if r() < 0.6 else page.table)(full, HEIGHT // 3) or []
    y = top
    for cat, tile, extent in stack:
        if y + tile.shape[0] > bottom:
            break
        page.put(cat, tile, margin + (full - tile.shape[1]) // 2, y, extent)
        y += tile.shape[0] + GAP + page.lead // 2
    gutter = int(rng.integers(18, 37))
    cw = (full - gutter) // 2 if two else full
    refs_col = len(cols := [margin, margin + cw + gutter] if two else [margin]) - 1
    refs_col = refs_col if r() < 0.8 else 0
    refs_at = bottom - (bottom - y) * rng.uniform(0.2, 1.0) if r() < 0.25 else HEIGHT
    makers, k = {"figure": page.figure, "table": page.table, "equation": page.equation}, 0
    for c, x in enumerate(cols):
        yc, prev, last = y, "", 0
        while True:
            room = bottom - yc - GAP - page.lead  # the most a block may take
            if c > refs_col or (c == refs_col and yc >= refs_at):
                blocks = page.heading(cw, "References") if k == 0 else page.reference(cw, room, k)
                k += 1
            else:
                kind = str(rng.choice(list(KINDS), p=list(KINDS.values())))
                kind = "paragraph" if kind == prev == "heading" else kind
                make = makers.get(kind)
                blocks = page.heading(cw) if kind == "heading" else make(cw, room) if make else None
                blocks, prev = blocks or page.paragraph(cw, room), kind
            if not blocks:
                break
            ys, joins, end = [], [], yc
            for cat, tile, _ in blocks:  # a float and its caption stay close, all else apart
                close = (last, cat) in ((FIGURE, FIG_CAP), (TAB_CAP, TABLE), (REFERENCE, REFERENCE))
                close |= last == cat == TEXT and page.indent > 0
                ys.append(end + GAP + (0 if close else page.lead // 2))
                joins.append(last == cat and cat in (TEXT, REFERENCE))
                end, last = ys[-1] + tile.shape[0], cat
            if end > bottom:
                break
            for (cat, tile, extent), yb, join in zip(blocks, ys, joins, strict=True):
                page.put(cat, tile, x, yb, extent, join)
            yc = end
    if r() < 0.3:  # a faint scan: grey noise, text stays crisp
        noise = rng.normal(0, rng.uniform(1, 3), (HEIGHT, WIDTH, 1))
        page.canvas[:] = np.clip(page.canvas + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(page.canvas), page.boxes


def synth_docs(out_dir, count: int, seed: int) -> dict:
    """``count`` pages under ``images/`` and their COCO ``annotations.json`` in the new folder
    ``out_dir``, built beside it and renamed into place, so a failure leaves nothing behind."""
    if seed < 0:
        raise QVisionError("--seed must be 0 or more")
    _mpl()  # a missing extra fails before any work
    _photo(PHOTOS[0])
    coco: dict = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [{"id": i, "name": n} for i, n in enumerate(CATEGORIES, 1)]
    with new_folder(out_dir, count) as tmp:
        for i in range(count):
            img, boxes = render_doc_page(np.random.default_rng([seed, i]))
            name = f"images/page_{i:05d}.png"
            img.save(tmp / name, compress_level=1)  # as small as level 6 here, 3x faster
            coco["images"].append(
                {"id": i + 1, "file_name": name, "width": WIDTH, "height": HEIGHT}
            )
            for cat, (x, y, w, h) in boxes:
                ann = {"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": cat}
                coco["annotations"].append(
                    {**ann, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
                )
        (tmp / ANNOTATIONS).write_text(json.dumps(coco), encoding="utf-8")
    return coco
