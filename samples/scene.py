"""A procedural street world in metres, seen through a pinhole camera.

The world is a straight street along +Z (road, sidewalks, optional grass strips, building
facades) with trees, poles and signs, cars and pedestrians. Everything is described in world
metres or in relative screen coordinates, so one world renders to the same picture at any image
size, and a moving camera (``Camera.z``) gives a smooth drive for the video.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Tuple

import numpy as np

# Cityscapes labelIds (gtFine *_labelIds.png); the dataset reader maps them to trainIds.
UNLABELED, EGO_VEHICLE = 0, 1
ROAD, SIDEWALK, BUILDING, POLE, SIGN = 7, 8, 11, 17, 20
VEGETATION, TERRAIN, SKY, PERSON, CAR = 21, 22, 23, 24, 26
LABEL_NAMES = {UNLABELED: "unlabeled", EGO_VEHICLE: "ego vehicle", ROAD: "road",
               SIDEWALK: "sidewalk", BUILDING: "building", POLE: "pole", SIGN: "traffic sign",
               VEGETATION: "vegetation", TERRAIN: "terrain", SKY: "sky", PERSON: "person", CAR: "car"}

NEAR = 1.0          # metres: near clipping distance in front of the camera
VIEW_FAR = 95.0     # metres: objects farther than this are not generated for a still frame

Colour = Tuple[int, int, int]     # typing.Tuple: a run-time alias must work on Python 3.8 (JetPack 5)

BUILDING_COLOURS: tuple[Colour, ...] = ((165, 82, 62), (196, 176, 140), (140, 138, 134),
                                        (208, 160, 92), (176, 150, 130), (120, 110, 128),
                                        (150, 120, 96), (200, 196, 184))
CAR_COLOURS: tuple[Colour, ...] = ((190, 28, 30), (30, 62, 165), (225, 225, 228), (28, 28, 32),
                                   (160, 165, 172), (230, 190, 40), (30, 110, 70), (110, 30, 90),
                                   (235, 120, 30), (90, 150, 210))
SHIRT_COLOURS: tuple[Colour, ...] = ((200, 40, 40), (40, 90, 200), (240, 240, 235), (30, 30, 30),
                                     (230, 200, 40), (60, 150, 70), (150, 60, 170), (240, 130, 50),
                                     (90, 200, 220), (240, 110, 160))
PANTS_COLOURS: tuple[Colour, ...] = ((35, 45, 80), (25, 25, 28), (150, 130, 95), (70, 70, 75),
                                     (60, 90, 140))
SKIN_COLOURS: tuple[Colour, ...] = ((230, 180, 140), (200, 140, 100), (150, 100, 65), (110, 70, 45))


def jitter(rng: np.random.Generator, base: Colour, amount: float) -> Colour:
    """``base`` plus a uniform per-channel offset in [-amount, amount], clipped to 0..255."""
    return tuple(int(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in base)  # type: ignore


def shade(colour: Colour, factor: float) -> Colour:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)  # type: ignore


@dataclass(frozen=True)
class Camera:
    """Pinhole camera on the street axis; ``focal`` in image widths, ``horizon``/``u0`` relative."""
    horizon: float
    u0: float
    height: float
    focal: float
    x: float = 0.0
    z: float = 0.0

    def project(self, H: int, W: int, X, Y, Z) -> np.ndarray:
        """World points (metres; Y up from the ground) -> float pixel coordinates (N, 2)."""
        X, Y, Z = np.broadcast_arrays(np.asarray(X, float), np.asarray(Y, float), np.asarray(Z, float))
        zr = np.maximum(Z - self.z, 1e-3)
        u = (self.u0 + self.focal * (X - self.x) / zr) * W
        v = self.horizon * H + self.focal * W * (self.height - Y) / zr
        return np.stack([u.ravel(), v.ravel()], axis=1)

    def scale(self, W: int, Z: float) -> float:
        """Pixels per metre on the plane at depth ``Z``."""
        return self.focal * W / max(Z - self.z, 1e-3)


@dataclass(frozen=True)
class Street:
    road: tuple[float, float]          # X of the left and right road edges
    lanes: tuple[float, ...]           # X of dashed lane lines
    sidewalk: tuple[float, float]      # widths left, right
    terrain: tuple[float, float]       # grass strip widths left, right (0 = none)
    curb: float
    road_colour: Colour
    sidewalk_colour: Colour
    terrain_colour: Colour
    marking_colour: Colour
    tile: float
    crosswalks: tuple[float, ...]      # Z of zebra crossings

    def facade_x(self, side: int) -> float:
        i = 0 if side < 0 else 1
        edge = self.road[i]
        return edge + side * (self.sidewalk[i] + self.terrain[i])


@dataclass(frozen=True)
class Building:
    side: int
    z0: float
    z1: float
    height: float
    depth: float
    colour: Colour
    window: Colour
    floor_h: float
    col_w: float
    win_w: float          # fraction of the column width
    win_h: float          # fraction of the floor height
    pattern_seed: int


@dataclass(frozen=True)
class Tree:
    x: float
    z: float
    trunk_h: float
    trunk_w: float
    trunk_colour: Colour
    blobs: tuple[tuple[float, float, float, Colour], ...]   # (dx, dy, radius) metres + colour


@dataclass(frozen=True)
class Sign:
    shape: str            # circle | triangle | square | diamond | rect
    size: float
    y: float
    face: Colour
    rim: Colour
    symbol: Colour


@dataclass(frozen=True)
class Pole:
    x: float
    z: float
    height: float
    width: float
    colour: Colour
    arm: float            # street-lamp arm length towards the road (0 = none), signed
    sign: Sign | None


@dataclass(frozen=True)
class Car:
    x: float
    z: float              # rear (or front for oncoming) face
    speed: float          # m/s along +Z
    w: float
    l: float
    h: float
    colour: Colour
    oncoming: bool


@dataclass(frozen=True)
class Person:
    x: float
    z: float
    speed: float
    h: float
    shirt: Colour
    pants: Colour
    skin: Colour
    hair: Colour
    stride: float         # leg spread, metres


@dataclass(frozen=True)
class Look:
    """Screen-space appearance: sky, distant skyline, lighting, noise, ego-vehicle hood."""
    sky_top: Colour
    sky_bottom: Colour
    clouds: tuple[tuple[float, float, float, float, int], ...]   # u, v, rx, ry relative + grey
    skyline: tuple[tuple[float, float, float, Colour], ...]      # u0, u1, height (rel H), colour
    gain: float
    white_balance: tuple[float, float, float]
    shadow_side: int                  # which facade casts a shadow on the ground (0 = none)
    shadow_width: float
    shadow_strength: float
    noise_sigma: float
    blur: float                       # Gaussian sigma in units of W/512 pixels (0 = none)
    hood: Colour | None
    hood_depth: float                 # relative height of the hood at the centre


@dataclass(frozen=True)
class World:
    camera: Camera
    street: Street
    buildings: tuple[Building, ...]
    trees: tuple[Tree, ...]
    poles: tuple[Pole, ...]
    cars: tuple[Car, ...]
    persons: tuple[Person, ...]
    look: Look
    seed: int
    cam_speed: float = 0.0

    def at(self, t: float) -> "World":
        """The world ``t`` seconds later: camera, cars and pedestrians moved along Z."""
        if t == 0:
            return self
        cam = replace(self.camera, z=self.camera.z + self.cam_speed * t)
        cars = tuple(replace(c, z=c.z + c.speed * t) for c in self.cars)
        persons = tuple(replace(p, z=p.z + p.speed * t) for p in self.persons)
        return replace(self, camera=cam, cars=cars, persons=persons)
