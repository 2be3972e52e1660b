"""The built-in synthetic task, rendered procedurally at any resolution; nothing is downloaded."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import Callable, Sequence

import torch

from .dataset import Dataset, DatasetError, channel_stats

SYNTHETIC = "synthetic"

# -- the synthetic task -----------------------------------------------------------------
#
# Class = shape x surface texture.  The textures are made of sinusoidal gratings of one
# spatial frequency, random per image over a wide range, and average to the plain
# object's colour, so once a grating is finer than the pixel grid can carry, the
# textures and plain look the same: each step up in resolution resolves more of them.
# Telling many similar outlines apart (a disk from a hexagon, a star from a cross) among
# clutter, and combining that with the texture, is what takes capacity.
# Rendering is analytic (signed distances, band-limited gratings), so every resolution is
# a true native render, free of aliasing, rather than a resize.

CLUTTER_RADIUS = (0.01, 0.07)     # distractors' long semi-axis, in image widths
PIXEL_BLUR = 0.5          # the renderer's Gaussian pixel filter, in pixels
RENDER_CACHE = 4          # (split, resolution, device) renders kept in memory


@dataclass(frozen=True)
class SyntheticLevel:
    """One difficulty of the synthetic task: which classes, and how the scenes vary.

    The classes are every (shape, texture) pair.  Lengths are in image widths; the
    texture period is drawn log-uniformly from ``period_range``.
    """

    name: str
    shapes: tuple[str, ...]
    textures: tuple[str, ...]
    clutter: int = 5                                  # distractor ellipses and bars
    period_range: tuple[float, float] = (1 / 128, 1 / 8)
    radius_range: tuple[float, float] = (0.15, 0.30)  # object radius
    noise: float = 0.04                               # per-pixel sensor noise, 0..1 units

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(f"{s}-{t}" for s in self.shapes for t in self.textures)


# 24 classes in which capacity pays, not only pixels (experiments/capacity/NOTES.md):
# six outlines that stay distinct at 32 px (larger objects; a ring rather than a hexagon
# next to the disk) times four textures whose gratings are all coarser than the 32 px
# pixel grid's limit, so every class is visible at the base resolution and a larger
# input only sharpens it.  (Until 2026-12 "hard" was 6 x 3 classes with gratings as fine
# as the easy level's; it rewarded resolution alone: experiments/capacity/NOTES.md.)
_HARD = SyntheticLevel("hard", shapes=("disk", "ring", "square", "triangle", "cross", "star"),
                       textures=("plain", "stripes", "checks", "rings"), period_range=(0.08, 0.2),
                       radius_range=(0.2, 0.35))
SYNTHETIC_LEVELS = {level.name: level for level in (
    # The original 12-class task; it mostly rewards resolution.
    SyntheticLevel("easy", shapes=("disk", "square", "triangle", "cross"),
                   textures=("plain", "stripes", "checks")),
    _HARD,
    # "hard"'s 24 classes, harder to see: smaller objects among more clutter, in three
    # times the sensor noise.  "hard" saturates within two passes (98% for resnet20 at 1x,
    # experiments/capacity/NOTES.md), and at one pass its seed-to-seed spread
    # hides width and depth; this level leaves headroom at two passes, where the spread is
    # small (experiments/capacity/NOTES.md).
    replace(_HARD, name="harder", radius_range=(0.15, 0.35), clutter=12, noise=0.12),
)}
# "synthetic" alone: the original task, which the test suite's tiny budgets and the demo rely on.
DEFAULT_LEVEL = "easy"

# The original task's names, kept for callers that import them.
SHAPES = SYNTHETIC_LEVELS["easy"].shapes
TEXTURES = SYNTHETIC_LEVELS["easy"].textures
SYNTHETIC_CLASSES = SYNTHETIC_LEVELS["easy"].classes


def synthetic_level(source: str) -> SyntheticLevel | None:
    """The level named by ``"synthetic"`` (the default level) or ``"synthetic:<level>"``;
    None when ``source`` names something else."""
    head, sep, name = source.partition(":")
    if head != SYNTHETIC:
        return None
    if not sep:
        return SYNTHETIC_LEVELS[DEFAULT_LEVEL]
    if name not in SYNTHETIC_LEVELS:
        raise DatasetError(f"unknown synthetic level '{name}' in '{source}' "
                           f"(choose {', '.join(f'{SYNTHETIC}:{n}' for n in SYNTHETIC_LEVELS)})")
    return SYNTHETIC_LEVELS[name]


@dataclass(frozen=True)
class Scenes:
    """Resolution-free parameters of synthetic images; lengths are in image widths."""

    label: torch.Tensor            # (N,) shape index * len(level.textures) + texture index
    shape: torch.Tensor            # (N,) index into ALL_SHAPES
    texture: torch.Tensor          # (N,) index into ALL_TEXTURES
    center: torch.Tensor           # (N, 2) x, y
    radius: torch.Tensor           # (N,)
    angle: torch.Tensor            # (N,)
    period: torch.Tensor           # (N,)
    phase: torch.Tensor            # (N, 2)
    colors: torch.Tensor           # (N, 2, 3) the texture's two colours
    background: torch.Tensor       # (N, 2, 3) the ends of a linear gradient
    gradient: torch.Tensor         # (N,) its direction
    clutter_center: torch.Tensor   # (N, K, 2) for K distractors
    clutter_radii: torch.Tensor    # (N, K, 2)
    clutter_angle: torch.Tensor    # (N, K)
    clutter_color: torch.Tensor    # (N, K, 3)

    def __len__(self) -> int:
        return len(self.label)

    def part(self, index: slice, device: torch.device) -> "Scenes":
        return Scenes(**{f.name: getattr(self, f.name)[index].to(device) for f in fields(self)})


def sample_scenes(n: int, seed: int, level: SyntheticLevel | str = "easy") -> Scenes:
    """``n`` random scenes of ``level``; labels cycle through the classes so any prefix is balanced."""
    level = SYNTHETIC_LEVELS[level] if isinstance(level, str) else level
    g = torch.Generator().manual_seed(seed)
    k = level.clutter

    def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=g)

    # One dark and one light colour per channel, so that every texture has contrast.
    colors = torch.stack([uniform(n, 3, high=0.45), uniform(n, 3, low=0.55)], 1)
    # A dark background, so that the mid-toned object always stands out from it, and by
    # the same polarity: the task should be about shape and texture, not finding things.
    darkness = uniform(n, 1, 1, high=0.2)
    log_period = uniform(n, low=math.log(level.period_range[0]), high=math.log(level.period_range[1]))
    label = torch.arange(n) % len(level.classes)
    shape_index = torch.tensor([ALL_SHAPES.index(name) for name in level.shapes])
    texture_index = torch.tensor([ALL_TEXTURES.index(name) for name in level.textures])
    return Scenes(
        label=label,
        shape=shape_index[label // len(level.textures)],
        texture=texture_index[label % len(level.textures)],
        center=uniform(n, 2, low=0.3, high=0.7),
        radius=uniform(n, low=level.radius_range[0], high=level.radius_range[1]),
        angle=uniform(n, high=2 * math.pi),
        period=log_period.exp(),
        phase=uniform(n, 2, high=2 * math.pi),
        colors=colors,
        background=(darkness + uniform(n, 2, 3, low=-0.1, high=0.1)).clamp(0, 1),
        gradient=uniform(n, high=2 * math.pi),
        clutter_center=uniform(n, k, 2),
        clutter_radii=torch.stack([uniform(n, k, low=CLUTTER_RADIUS[0], high=CLUTTER_RADIUS[1]),
                                   uniform(n, k, low=0.004, high=0.03)], -1),
        clutter_angle=uniform(n, k, high=math.pi),
        clutter_color=uniform(n, k, 3),
    )


def render_scenes(scenes: Scenes, resolution: int, device: str | torch.device = "cpu",
                  noise_seed: int = 0, noise: float = 0.04) -> torch.Tensor:
    """Render scenes natively at ``resolution``: uint8 (N, 3, resolution, resolution).

    Work is split into chunks of about 4M pixels to bound memory at large resolutions.
    """
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(noise_seed)
    out = torch.empty((len(scenes), 3, resolution, resolution), dtype=torch.uint8, device=device)
    step = max(1, (1 << 22) // (resolution * resolution))
    for start in range(0, len(scenes), step):
        part = scenes.part(slice(start, start + step), device)
        image = _render(part, resolution)
        image += noise * torch.randn(image.shape, generator=generator, device=device)
        out[start:start + step] = image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return out


def _render(s: Scenes, resolution: int) -> torch.Tensor:
    """Float (n, 3, R, R) in 0..1: background gradient, clutter, then the textured object."""
    px = 1.0 / resolution
    grid = (torch.arange(resolution, device=s.label.device, dtype=torch.float32) + 0.5) * px
    x, y = grid.view(1, 1, -1), grid.view(1, -1, 1)
    along = ((x - 0.5) * s.gradient.cos().view(-1, 1, 1)
             + (y - 0.5) * s.gradient.sin().view(-1, 1, 1) + 0.5).clamp(0, 1)
    c0, c1 = s.background[:, 0, :, None, None], s.background[:, 1, :, None, None]
    # Pixels in a flat canvas with one spare pixel (see _paint_clutter); image is a view.
    canvas = grid.new_empty((len(s), 3, resolution * resolution + 1))
    image = canvas[:, :, :-1].unflatten(2, (resolution, resolution))
    image.copy_(c0 + (c1 - c0) * along[:, None])
    for k in range(s.clutter_center.shape[1]):
        _paint_clutter(canvas, resolution, s.clutter_center[:, k], s.clutter_radii[:, k],
                       s.clutter_angle[:, k], s.clutter_color[:, k])
    a, b = _rotated(x, y, s.center, s.angle)
    r = s.radius.view(-1, 1, 1)
    distance = _per_kind(s.shape, list(_SHAPE_DISTANCE.values()), a / r, b / r) * r
    t = _texture(s.texture, a, b, s.period.view(-1, 1, 1), s.phase, resolution)
    mid = s.colors.mean(1)[:, :, None, None]
    half = (s.colors[:, 1] - s.colors[:, 0])[:, :, None, None] / 2
    coverage = _coverage(distance, px)[:, None]
    return image.lerp_(mid + half * t[:, None], coverage.expand_as(image))


def _rotated(x: torch.Tensor, y: torch.Tensor, center: torch.Tensor,
             angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's coordinates in the frame of an object at ``center`` turned by ``angle``."""
    dx, dy = x - center[:, 0, None, None], y - center[:, 1, None, None]
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    return cos * dx + sin * dy, cos * dy - sin * dx


def _coverage(distance: torch.Tensor, px: float) -> torch.Tensor:
    # Fraction of a pixel inside the shape: a one-pixel ramp across the edge (antialiasing).
    return (0.5 - distance / px).clamp_(0, 1)


def _paint_clutter(canvas: torch.Tensor, res: int, center: torch.Tensor, radii: torch.Tensor,
                   angle: torch.Tensor, color: torch.Tensor) -> None:
    """Paint one small ellipse per image into ``canvas`` (n, 3, res * res + 1), in place.

    Distractors cover a few percent of the image, so evaluating them on a window rather
    than the full grid keeps clutter cheap at any resolution.  Window pixels that fall
    outside the image are routed to the canvas's last, spare pixel.
    """
    n = len(canvas)
    side = 2 * math.ceil(CLUTTER_RADIUS[1] * res) + 2
    origin = (center * res).floor().long() - side // 2                       # (n, 2) x, y
    cols = origin[:, 0, None] + torch.arange(side, device=canvas.device)      # (n, side)
    rows = origin[:, 1, None] + torch.arange(side, device=canvas.device)
    x, y = ((cols + 0.5) / res)[:, None, :], ((rows + 0.5) / res)[:, :, None]
    a, b = _rotated(x, y, center, angle)
    distance = _ellipse_distance(a, b, radii[:, 0, None, None], radii[:, 1, None, None])
    coverage = _coverage(distance, 1.0 / res).view(n, 1, -1)
    inside = ((rows >= 0) & (rows < res))[:, :, None] & ((cols >= 0) & (cols < res))[:, None, :]
    flat_index = torch.where(inside, rows[:, :, None] * res + cols[:, None, :], res * res)
    flat_index = flat_index.view(n, 1, -1).expand(n, 3, -1)
    painted = canvas.gather(2, flat_index).lerp_(color[:, :, None].expand(n, 3, side * side),
                                                 coverage.expand(n, 3, -1))
    canvas.scatter_(2, flat_index, painted)


def _norm(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # sqrt(u^2 + v^2); torch's hypot guards against overflow at twice the cost, needless here.
    return torch.addcmul(u * u, v, v).sqrt_()


def _ellipse_distance(a: torch.Tensor, b: torch.Tensor, ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
    # First-order distance estimate (q - 1) / |grad q| of the implicit q = |(a/ra, b/rb)|.
    q = _norm(a / ra, b / rb)
    grad = _norm(a / ra**2, b / rb**2) / q.clamp_min(1e-6)
    return (q - 1) / grad.clamp_min(1e-6)


def _box(u: torch.Tensor, v: torch.Tensor, half_u: float, half_v: float) -> torch.Tensor:
    du, dv = u.abs() - half_u, v.abs() - half_v
    return _norm(du.clamp(min=0), dv.clamp(min=0)) + torch.maximum(du, dv).clamp(max=0)


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Equilateral triangle centred on its centroid (Quilez's exact distance), area pi.
    half_side, k = math.sqrt(math.pi / math.sqrt(3)), math.sqrt(3)
    pu, pv = u.abs() - half_side, v + half_side / k
    fold = pu + k * pv > 0
    pu, pv = torch.where(fold, (pu - k * pv) / 2, pu), torch.where(fold, (-k * pu - pv) / 2, pv)
    pu = pu - pu.clamp(-2 * half_side, 0)
    return -_norm(pu, pv) * torch.sign(pv)


def _hexagon(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Regular hexagon (Quilez's exact distance) with apothem 0.952, area pi.
    apothem, kx, ky, kz = 0.9523, -math.sqrt(3) / 2, 0.5, 1 / math.sqrt(3)
    pu, pv = u.abs(), v.abs()
    fold = 2 * (kx * pu + ky * pv).clamp(max=0)
    pu, pv = pu - fold * kx, pv - fold * ky
    pu, pv = pu - pu.clamp(-kz * apothem, kz * apothem), pv - apothem
    return _norm(pu, pv) * torch.sign(pv)


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Five soft points: radius R(t) = R0 (1 + 0.35 cos 5t), area pi; the distance is the
    # first-order estimate (rho - R) / |grad|, which is all the edge antialiasing needs.
    rho, theta = _norm(u, v), torch.atan2(v, u)
    r0, depth = 0.9707, 0.35
    radius = r0 * (1 + depth * torch.cos(5 * theta))
    slope = 5 * r0 * depth * torch.sin(5 * theta) / rho.clamp_min(1e-6)
    return (rho - radius) / _norm(torch.ones_like(slope), slope)


def _half_disk(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Radius sqrt(2) (area pi), centred on its centroid, 4R / 3pi above the flat side.
    v = v + 4 * math.sqrt(2) / (3 * math.pi)
    return torch.maximum(_norm(u, v) - math.sqrt(2), -v)


# Signed distances in units of the object radius; each shape has an area close to pi so
# that size alone does not give the class away.  The "easy" level's shapes come first.
_SHAPE_DISTANCE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "disk": lambda u, v: _norm(u, v) - 1,
    "square": lambda u, v: _box(u, v, 0.886, 0.886),
    "triangle": _triangle,
    "cross": lambda u, v: torch.minimum(_box(u, v, 1.15, 0.42), _box(u, v, 0.42, 1.15)),
    "hexagon": _hexagon,
    "star": _star,
    "ring": lambda u, v: (_norm(u, v) - 1).abs() - 0.25,  # radii 0.75..1.25
    "half-disk": _half_disk,
}
ALL_SHAPES = tuple(_SHAPE_DISTANCE)


def _per_kind(kind: torch.Tensor, functions: Sequence[Callable[..., torch.Tensor]],
              *args: torch.Tensor) -> torch.Tensor:
    """``functions[kind[i]]`` applied to image i's slice of ``args``, each function called
    once on all of its images (the output has the shape of ``args[0]``)."""
    out = torch.empty_like(args[0])
    for index, function in enumerate(functions):
        chosen = (kind == index).nonzero().squeeze(1)
        if len(chosen):
            out[chosen] = function(*(x[chosen] for x in args))
    return out


# Textures of the object's rotated coordinates (a, b) as functions of the angular
# frequency w = 2 pi / period and two phases, in -1..1, built from gratings of frequency
# exactly 1 / period so that one gain (see _texture) band-limits them exactly.
_TEXTURE: dict[str, Callable[..., torch.Tensor]] = {
    "plain": lambda a, b, w, p0, p1: torch.zeros_like(a),
    "stripes": lambda a, b, w, p0, p1: torch.cos(w * a + p0),
    "checks": lambda a, b, w, p0, p1: torch.cos(w / math.sqrt(2) * a + p0) * torch.cos(w / math.sqrt(2) * b + p1),
    "rings": lambda a, b, w, p0, p1: torch.cos(w * _norm(a, b) + p0),
}
ALL_TEXTURES = tuple(_TEXTURE)


def _texture(texture: torch.Tensor, a: torch.Tensor, b: torch.Tensor, period: torch.Tensor,
             phase: torch.Tensor, resolution: int) -> torch.Tensor:
    """The object's texture in -1..1, attenuated as the pixel grid would blur it.

    The gain is the response of a Gaussian pixel filter at frequency 1 / period, and zero
    past the Nyquist limit, so that detail this resolution cannot carry fades to the mean
    colour instead of aliasing.
    """
    cycles_per_pixel = 1 / (period * resolution)
    gain = torch.exp(-2 * (math.pi * PIXEL_BLUR * cycles_per_pixel) ** 2) * (cycles_per_pixel < 0.5)
    w = (2 * math.pi / period).expand_as(a)
    p0, p1 = (phase[:, i, None, None].expand_as(a) for i in range(2))
    return gain * _per_kind(texture, list(_TEXTURE.values()), a, b, w, p0, p1)


def synthetic_dataset(n_train: int = 5000, n_val: int = 1000, seed: int = 0,
                      level: SyntheticLevel | str = DEFAULT_LEVEL) -> Dataset:
    """The synthetic task at ``level`` (a SyntheticLevel or its name), deterministic given ``seed``.

    The scenes do not depend on the resolution or the device; only the pixel noise is
    drawn per resolution, from a generator on the rendering device.
    """
    level = SYNTHETIC_LEVELS[level] if isinstance(level, str) else level
    scenes = {"train": sample_scenes(n_train, 2 * seed, level), "val": sample_scenes(n_val, 2 * seed + 1, level)}
    renders: OrderedDict[tuple[str, int, str], torch.Tensor] = OrderedDict()

    def rendered(split: str, resolution: int, device: torch.device) -> torch.Tensor:
        key = (split, resolution, str(device))
        if key not in renders:
            noise_seed = (2 * seed + (split == "val")) * 100_003 + resolution
            renders[key] = render_scenes(scenes[split], resolution, device, noise_seed, level.noise)
            while len(renders) > RENDER_CACHE:
                renders.popitem(last=False)
        renders.move_to_end(key)
        return renders[key]

    sample = scenes["train"].part(slice(0, 512), torch.device("cpu"))
    mean, std = channel_stats(render_scenes(sample, 32, noise=level.noise))
    labels = {s: sc.label.clone() for s, sc in scenes.items()}
    name = SYNTHETIC if level.name == DEFAULT_LEVEL else f"{SYNTHETIC}:{level.name}"
    return Dataset(name, level.classes, labels, rendered, mean, std, native_resolution=None)
