"""Random street worlds: every choice comes from one numpy Generator, so a seed fixes the scene."""
from __future__ import annotations

import numpy as np

from samples.scene import (BUILDING_COLOURS, CAR_COLOURS, PANTS_COLOURS, SHIRT_COLOURS,
                           SKIN_COLOURS, VIEW_FAR, Building, Camera, Car, Look, Person, Pole,
                           Sign, Street, Tree, World, jitter, shade)


def _positions(rng: np.random.Generator, z0: float, z1: float, rate: float, gap: float) -> list[float]:
    """Poisson-like positions in [z0, z1] with ``rate`` per metre and a minimum spacing ``gap``."""
    n = rng.poisson(max(rate * (z1 - z0), 0.0))
    out: list[float] = []
    for z in np.sort(rng.uniform(z0, z1, size=n)):
        if not out or z - out[-1] >= gap:
            out.append(float(z))
    return out


def make_street(rng: np.random.Generator) -> tuple[Street, int, float]:
    """Road, sidewalks and grass strips; returns (street, number of lanes, lane width)."""
    n_lanes = int(rng.integers(2, 5))
    lane_w = float(rng.uniform(3.0, 3.8))
    cam_lane = int(rng.integers(n_lanes // 2, n_lanes))        # drive on the right half
    left = -(cam_lane + 0.5) * lane_w + float(rng.uniform(-0.4, 0.4))
    right = left + n_lanes * lane_w
    lanes = tuple(left + k * lane_w for k in range(1, n_lanes))
    grey = float(rng.uniform(62, 105))
    road = jitter(rng, (grey, grey, grey + 4), 6)
    side_grey = float(rng.uniform(135, 180))
    sidewalk = jitter(rng, (side_grey + 12, side_grey, side_grey - 6), 8)
    terrain = jitter(rng, (128, 156, 72), 16)
    widths = tuple(float(rng.uniform(2.5, 5.0)) for _ in range(2))
    grass = tuple(float(rng.uniform(2.5, 6.0)) if rng.random() < 0.5 else 0.0 for _ in range(2))
    crosswalks = tuple(float(z) for z in rng.uniform(12, 60, size=int(rng.random() < 0.3)))
    street = Street(road=(left, right), lanes=lanes, sidewalk=widths, terrain=grass,  # type: ignore
                    curb=float(rng.uniform(0.12, 0.2)), road_colour=road, sidewalk_colour=sidewalk,
                    terrain_colour=terrain, marking_colour=jitter(rng, (230, 230, 222), 12),
                    tile=float(rng.uniform(0.8, 1.6)), crosswalks=crosswalks)
    return street, n_lanes, lane_w


def make_buildings(rng: np.random.Generator, street: Street, z_end: float) -> list[Building]:
    out: list[Building] = []
    for side in (-1, 1):
        if rng.random() < 0.08:
            continue
        z = -15.0
        while z < z_end:
            length = float(rng.uniform(10, 35))
            if rng.random() < 0.15:
                z += float(rng.uniform(8, 18))            # a gap: side street or yard
            base = BUILDING_COLOURS[int(rng.integers(len(BUILDING_COLOURS)))]
            out.append(Building(
                side=side, z0=z, z1=z + length, height=float(rng.uniform(7, 30)),
                depth=float(rng.uniform(8, 20)), colour=jitter(rng, base, 18),
                window=jitter(rng, (55, 70, 95), 20), floor_h=float(rng.uniform(2.8, 3.8)),
                col_w=float(rng.uniform(2.0, 3.4)), win_w=float(rng.uniform(0.4, 0.7)),
                win_h=float(rng.uniform(0.4, 0.65)), pattern_seed=int(rng.integers(1 << 30))))
            z += length
    return out


def make_trees(rng: np.random.Generator, street: Street, z0: float, z1: float) -> list[Tree]:
    out: list[Tree] = []
    for i, side in enumerate((-1, 1)):
        if rng.random() < 0.4:
            continue
        edge = street.road[i] + side * (street.sidewalk[i] + 0.5 * street.terrain[i])
        for z in _positions(rng, z0, z1, rate=0.07, gap=7.0):
            crown = float(rng.uniform(1.6, 3.0))
            green = jitter(rng, (55, 110, 45), 22)
            blobs = tuple((float(rng.uniform(-0.7, 0.7) * crown), float(rng.uniform(-0.5, 0.6) * crown),
                           float(rng.uniform(0.45, 0.8) * crown), shade(green, float(rng.uniform(0.7, 1.25))))
                          for _ in range(int(rng.integers(5, 10))))
            out.append(Tree(x=edge - side * float(rng.uniform(0, 0.6)), z=z,
                            trunk_h=float(rng.uniform(2.0, 3.5)), trunk_w=float(rng.uniform(0.25, 0.45)),
                            trunk_colour=jitter(rng, (95, 70, 48), 15), blobs=blobs))
    return out


def make_sign(rng: np.random.Generator) -> Sign:
    kind = ["circle", "triangle", "square", "diamond", "rect"][int(rng.integers(5))]
    palettes = {"circle": ((245, 245, 245), (200, 20, 25), (20, 20, 20)),
                "triangle": ((245, 245, 240), (205, 25, 30), (25, 25, 25)),
                "square": ((25, 80, 190), (240, 240, 240), (245, 245, 245)),
                "diamond": ((245, 200, 20), (240, 240, 240), (30, 30, 30)),
                "rect": ((20, 120, 60), (235, 235, 235), (240, 240, 240))}
    face, rim, symbol = palettes[kind]
    return Sign(shape=kind, size=float(rng.uniform(0.8, 1.2)), y=float(rng.uniform(2.4, 3.2)),
                face=jitter(rng, face, 14), rim=jitter(rng, rim, 14), symbol=jitter(rng, symbol, 10))


def make_poles(rng: np.random.Generator, street: Street, z0: float, z1: float) -> list[Pole]:
    out: list[Pole] = []
    for i, side in enumerate((-1, 1)):
        x = street.road[i] + side * float(rng.uniform(0.5, 0.9))
        for z in _positions(rng, max(z0, 4.0), z1, rate=0.09, gap=6.0):
            lamp = rng.random() < 0.35
            sign = make_sign(rng) if (not lamp and rng.random() < 0.8) or rng.random() < 0.2 else None
            grey = float(rng.uniform(70, 120))
            out.append(Pole(x=x, z=z, height=float(rng.uniform(6.5, 9.0) if lamp else rng.uniform(3.6, 5.0)),
                            width=float(rng.uniform(0.3, 0.45)), colour=jitter(rng, (grey, grey + 4, grey + 10), 8),
                            arm=-side * float(rng.uniform(1.2, 2.2)) if lamp else 0.0, sign=sign))
    return out


def make_cars(rng: np.random.Generator, street: Street, n_lanes: int, lane_w: float,
              z0: float, z1: float, cam_speed: float) -> list[Car]:
    out: list[Car] = []
    left = street.road[0]
    for k in range(n_lanes):
        x = left + (k + 0.5) * lane_w
        oncoming = k < n_lanes // 2
        own = abs(x) < lane_w / 2
        speed = -float(rng.uniform(6, 12)) if oncoming else cam_speed * float(rng.uniform(0.9, 1.1))
        for z in _positions(rng, max(z0, 7.0 if own else 3.0), z1, rate=0.05, gap=9.0):
            out.append(_car(rng, x + float(rng.uniform(-0.3, 0.3)), z, speed, oncoming))
    for i, side in enumerate((-1, 1)):
        if rng.random() < 0.45:                           # a row of parked cars along the curb
            x = street.road[i] - side * 1.15
            for z in _positions(rng, z0, z1, rate=0.12, gap=5.8):
                out.append(_car(rng, x, z, 0.0, oncoming=bool(rng.random() < 0.5)))
    return out


def _car(rng: np.random.Generator, x: float, z: float, speed: float, oncoming: bool) -> Car:
    base = CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))]
    return Car(x=x, z=z, speed=speed, w=float(rng.uniform(1.7, 2.0)), l=float(rng.uniform(3.9, 4.8)),
               h=float(rng.uniform(1.4, 1.65)), colour=jitter(rng, base, 18), oncoming=oncoming)


def make_persons(rng: np.random.Generator, street: Street, z0: float, z1: float) -> list[Person]:
    out: list[Person] = []
    for i, side in enumerate((-1, 1)):
        lo, hi = 0.6, street.sidewalk[i] - 0.4
        for z in _positions(rng, z0, z1, rate=0.12, gap=1.2):
            x = street.road[i] + side * float(rng.uniform(lo, hi))
            out.append(Person(
                x=x, z=z, speed=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.0, 1.4)),
                h=float(rng.uniform(1.6, 1.95)),
                shirt=jitter(rng, SHIRT_COLOURS[int(rng.integers(len(SHIRT_COLOURS)))], 20),
                pants=jitter(rng, PANTS_COLOURS[int(rng.integers(len(PANTS_COLOURS)))], 12),
                skin=jitter(rng, SKIN_COLOURS[int(rng.integers(len(SKIN_COLOURS)))], 10),
                hair=jitter(rng, (40, 30, 25), 20), stride=float(rng.uniform(0.05, 0.3))))
    return out


def make_look(rng: np.random.Generator) -> Look:
    overcast = rng.random() < 0.3
    top = jitter(rng, (168, 178, 192) if overcast else (80, 135, 215), 18)
    bottom = jitter(rng, (198, 204, 212) if overcast else (180, 205, 235), 12)
    clouds = tuple((float(rng.uniform(0, 1)), float(rng.uniform(0.0, 0.3)), float(rng.uniform(0.05, 0.16)),
                    float(rng.uniform(0.02, 0.06)), int(rng.uniform(215, 245)))
                   for _ in range(int(rng.integers(0, 6))))
    skyline = []
    u = -0.05
    while u < 1.05:
        w = float(rng.uniform(0.04, 0.14))
        base = BUILDING_COLOURS[int(rng.integers(len(BUILDING_COLOURS)))]
        skyline.append((u, u + w, float(rng.uniform(0.02, 0.11)), shade(jitter(rng, base, 15), 0.85)))
        u += w
    return Look(sky_top=top, sky_bottom=bottom, clouds=clouds, skyline=tuple(skyline),
                gain=float(rng.uniform(0.72, 1.2)),
                white_balance=tuple(float(g) for g in rng.uniform(0.92, 1.08, size=3)),  # type: ignore
                shadow_side=int(rng.choice([-1, 0, 1])), shadow_width=float(rng.uniform(3, 9)),
                shadow_strength=float(rng.uniform(0.55, 0.8)), noise_sigma=float(rng.uniform(2, 7)),
                blur=float(rng.uniform(0.4, 1.0)) if rng.random() < 0.5 else 0.0,
                hood=jitter(rng, (40, 42, 48), 15) if rng.random() < 0.85 else None,
                hood_depth=float(rng.uniform(0.07, 0.11)))


def generate_world(rng: np.random.Generator, length: float = 0.0, cam_speed: float = 0.0) -> World:
    """A random street. ``length`` metres of extra street ahead for a drive at ``cam_speed`` m/s."""
    camera = Camera(horizon=float(rng.uniform(0.38, 0.47)), u0=float(rng.uniform(0.44, 0.56)),
                    height=float(rng.uniform(1.3, 1.7)), focal=float(rng.uniform(0.55, 0.7)))
    street, n_lanes, lane_w = make_street(rng)
    z_far = VIEW_FAR + length
    moving_far = z_far + 12.0 * length / max(cam_speed, 1.0)   # oncoming cars arrive from further
    return World(camera=camera, street=street,
                 buildings=tuple(make_buildings(rng, street, z_far + 200.0)),
                 trees=tuple(make_trees(rng, street, 3.0, z_far)),
                 poles=tuple(make_poles(rng, street, 3.0, z_far)),
                 cars=tuple(make_cars(rng, street, n_lanes, lane_w, 3.0, moving_far, cam_speed)),
                 persons=tuple(make_persons(rng, street, 3.0, min(z_far, 35.0 + length))),
                 look=make_look(rng), seed=int(rng.integers(1 << 31)), cam_speed=cam_speed)
