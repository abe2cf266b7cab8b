"""Render a :class:`~samples.scene.World` to an RGB image and its labelId map.

Geometry is drawn with OpenCV (``samples.canvas``); appearance then gets class-specific texture
(asphalt grain, leafy foliage, ...), low-frequency illumination, white balance, sensor noise and
an optional blur. Noise fields are defined on fixed relative grids, so every size shows the same
scene; only the per-pixel sensor grain is per pixel.
"""
from __future__ import annotations

import cv2
import numpy as np

from samples.canvas import Canvas
from samples.render_objects import draw_hood, draw_objects
from samples.render_static import draw_buildings, draw_ground, draw_sky
from samples.scene import (BUILDING, CAR, EGO_VEHICLE, PERSON, POLE, ROAD, SIDEWALK, SIGN, SKY,
                           TERRAIN, VEGETATION, World)

# Texture amplitudes (grey levels) per labelId: (coarse blotches, leafy, fine grain)
TEXTURE = {ROAD: (7, 3, 7), SIDEWALK: (6, 3, 5), BUILDING: (9, 3, 4), POLE: (3, 2, 3),
           SIGN: (2, 1, 2), VEGETATION: (18, 26, 10), TERRAIN: (10, 8, 14), SKY: (4, 0, 1.5),
           PERSON: (4, 3, 4), CAR: (3, 2, 3), EGO_VEHICLE: (3, 1, 2)}


def _lut(index: int) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    for label, amps in TEXTURE.items():
        lut[label] = amps[index]
    return lut


LUTS = tuple(_lut(i) for i in range(3))


def _field(rng: np.random.Generator, grid: tuple[int, int], H: int, W: int) -> np.ndarray:
    """Smooth unit-variance noise defined on a relative grid, resized to (H, W)."""
    small = rng.standard_normal(grid, dtype=np.float32)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)


def apply_appearance(img: np.ndarray, lab: np.ndarray, world: World, rng: np.random.Generator) -> np.ndarray:
    """Texture, lighting, noise and blur on the drawn geometry; returns uint8 RGB."""
    H, W = lab.shape
    look = world.look
    tex_rng = np.random.default_rng([world.seed, 7])          # textures fixed per world
    coarse = _field(tex_rng, (24, 48), H, W)
    leafy = _field(tex_rng, (96, 192), H, W)
    grain = rng.standard_normal((H, W), dtype=np.float32)
    texture = LUTS[0][lab] * coarse + LUTS[1][lab] * leafy + LUTS[2][lab] * grain
    out = img.astype(np.float32) + texture[..., None]
    light = 1.0 + 0.1 * _field(tex_rng, (3, 6), H, W)
    gains = look.gain * np.asarray(look.white_balance, np.float32)
    out *= light[..., None] * gains[None, None, :]
    out += rng.standard_normal((H, W, 3), dtype=np.float32) * look.noise_sigma
    if look.blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), look.blur * W / 512.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_world(world: World, H: int, W: int, frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``world`` at H x W. Returns (RGB uint8 (H, W, 3), labelIds uint8 (H, W))."""
    rgb, lab, _ = render_world_instances(world, H, W, frame)
    return rgb, lab


def render_world_instances(world: World, H: int, W: int, frame: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`render_world`, plus Cityscapes instanceIds (uint16 (H, W), see Canvas.instance_ids)."""
    cv = Canvas(H, W, world.camera)
    draw_sky(cv, world)
    draw_ground(cv, world)
    draw_buildings(cv, world)
    draw_objects(cv, world)
    draw_hood(cv, world)
    rng = np.random.default_rng([world.seed, 1000 + frame])
    return apply_appearance(cv.img, cv.lab, world, rng), cv.lab, cv.instance_ids()
