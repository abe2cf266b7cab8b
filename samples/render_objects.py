"""Things on the street: trees, poles with signs and lamps, cars, pedestrians, the ego hood."""
from __future__ import annotations

import numpy as np

from samples.canvas import Canvas
from samples.scene import (CAR, EGO_VEHICLE, NEAR, PERSON, POLE, SIGN, VEGETATION, Car, Person,
                           Pole, Sign, Tree, World, shade)

MIN_POLE_W = 0.016         # image widths: poles never thinner than this (8 px at 512 wide)
MIN_SIGN = 0.036           # image widths: signs never smaller than this
MIN_PERSON = 0.14          # image heights: pedestrians never shorter than this
OBJECT_FAR = 120.0
SHADOW = (38, 38, 42)


def draw_objects(cv: Canvas, world: World) -> None:
    """Trees, poles, cars and pedestrians, far to near (painter's algorithm)."""
    cam = world.camera
    items: list[tuple[float, object]] = [(o.z, o) for o in (*world.trees, *world.poles, *world.persons)]
    items += [(c.z, c) for c in world.cars]
    items.sort(key=lambda it: -it[0])
    for z, obj in items:
        if z - cam.z > OBJECT_FAR:
            continue
        if isinstance(obj, Tree):
            draw_tree(cv, obj)
        elif isinstance(obj, Pole):
            draw_pole(cv, obj)
        elif isinstance(obj, (Car, Person)):      # classes with instances in Cityscapes
            cv.begin_instance()
            (draw_car if isinstance(obj, Car) else draw_person)(cv, obj)
            cv.end_instance()


def draw_tree(cv: Canvas, t: Tree) -> None:
    if t.z - cv.cam.z < 1.5:
        return
    u, v, s = cv.billboard(t.x, t.z)
    hw = max(t.trunk_w / 2 * s, 0.5 * MIN_POLE_W * cv.W)
    cv.rect(u - hw, v - t.trunk_h * s - hw, u + hw, v, t.trunk_colour, VEGETATION)
    top = max(r for _, _, r, _ in t.blobs)
    cy = t.trunk_h + 0.8 * top
    for dx, dy, r, colour in t.blobs:
        cv.circle((u + dx * s, v - (cy + dy) * s), r * s, colour, VEGETATION)


def draw_pole(cv: Canvas, p: Pole) -> None:
    if p.z - cv.cam.z < NEAR + 0.5:
        return
    u, v, s = cv.billboard(p.x, p.z)
    hw = max(p.width / 2 * s, MIN_POLE_W * cv.W / 2)
    top = v - p.height * s
    cv.rect(u - hw, top, u + hw, v, p.colour, POLE)
    cv.rect(u - hw / 3, top, u + hw / 3, v, shade(p.colour, 1.35), POLE)
    if p.arm:
        t = max(0.15 * s, 0.6 * hw)
        ax = u + p.arm * s
        cv.rect(min(u, ax), top + t, max(u, ax), top + 2.2 * t, p.colour, POLE)
        cv.rect(ax - 0.35 * s * np.sign(p.arm) - t, top + t, ax + t, top + 3.5 * t, shade(p.colour, 0.8), POLE)
    if p.sign is not None:
        draw_sign(cv, p.sign, u, v - p.sign.y * s, max(p.sign.size * s, MIN_SIGN * cv.W))


def draw_sign(cv: Canvas, sg: Sign, u: float, v: float, size: float) -> None:
    r = size / 2
    if sg.shape == "circle":
        cv.circle((u, v), r, sg.rim, SIGN)
        cv.circle((u, v), 0.72 * r, sg.face, SIGN)
        cv.rect(u - 0.45 * r, v - 0.12 * r, u + 0.45 * r, v + 0.12 * r, sg.symbol, SIGN)
    elif sg.shape == "triangle":
        tri = np.array([[u, v - r], [u + 1.05 * r, v + 0.8 * r], [u - 1.05 * r, v + 0.8 * r]])
        cv.poly(tri, sg.rim, SIGN)
        cv.poly((tri - [u, v + 0.12 * r]) * 0.55 + [u, v + 0.12 * r], sg.face, SIGN)
        cv.rect(u - 0.08 * r, v - 0.25 * r, u + 0.08 * r, v + 0.35 * r, sg.symbol, SIGN)
    elif sg.shape == "diamond":
        d = np.array([[u, v - r], [u + r, v], [u, v + r], [u - r, v]])
        cv.poly(d, sg.rim, SIGN)
        cv.poly((d - [u, v]) * 0.75 + [u, v], sg.face, SIGN)
    else:
        wide = 1.5 if sg.shape == "rect" else 1.0
        cv.rect(u - wide * r, v - r, u + wide * r, v + r, sg.rim, SIGN)
        cv.rect(u - wide * r + 0.12 * r, v - 0.88 * r, u + wide * r - 0.12 * r, v + 0.88 * r, sg.face, SIGN)
        cv.rect(u - 0.4 * wide * r, v - 0.15 * r, u + 0.4 * wide * r, v + 0.15 * r, sg.symbol, SIGN)


def draw_car(cv: Canvas, c: Car) -> None:
    cam = cv.cam
    zr = cv.visible_z(c.z, c.z + c.l, NEAR)
    if zr is None:
        return
    x0, x1 = c.x - c.w / 2, c.x + c.w / 2
    belt = 0.62 * c.h
    glass = (36, 44, 54)
    cv.poly(cv.ground_quad(x0 - 0.1, x1 + 0.1, zr[0] - 0.15, zr[1]), SHADOW, None)
    side_x = x0 if x0 > cam.x else (x1 if x1 < cam.x else None)
    cab_z = (c.z + 0.25 * c.l, c.z + 0.8 * c.l) if not c.oncoming else (c.z + 0.2 * c.l, c.z + 0.75 * c.l)
    cab_x = (x0 + 0.12, x1 - 0.12)
    if side_x is not None:
        cv.poly(cv.side_quad(side_x, zr[0], zr[1], 0.22, belt), shade(c.colour, 0.8), CAR)
        for zc in (c.z + 0.8, c.z + c.l - 0.8):
            if zc - cam.z > NEAR + 0.4:
                a = np.linspace(0, 2 * np.pi, 16, endpoint=False)
                cv.poly(cv.project(side_x, 0.33 + 0.33 * np.sin(a), zc + 0.33 * np.cos(a)), (18, 18, 20), CAR)
    cv.poly(cv.ground_quad(x0, x1, zr[0], zr[1], belt), shade(c.colour, 1.1), CAR)
    cz = cv.visible_z(*cab_z, NEAR)
    if cz is not None:
        sx = cab_x[0] if side_x == x0 else cab_x[1]
        if side_x is not None:
            cv.poly(cv.side_quad(sx, cz[0], cz[1], belt, c.h), glass, CAR)
        cv.poly(cv.ground_quad(cab_x[0], cab_x[1], cz[0], cz[1], c.h), shade(c.colour, 1.05), CAR)
        if cab_z[0] >= cam.z + NEAR:
            cv.poly(cv.front_quad(cab_z[0], cab_x[0], cab_x[1], belt, c.h), c.colour, CAR)
            cv.poly(cv.front_quad(cab_z[0], cab_x[0] + 0.1, cab_x[1] - 0.1, belt + 0.05, c.h - 0.08), glass, CAR)
    if c.z >= cam.z + NEAR:
        _draw_car_face(cv, c, x0, x1, belt)


def _draw_car_face(cv: Canvas, c: Car, x0: float, x1: float, belt: float) -> None:
    z = c.z
    for xw in (x0 + 0.1, x1 - 0.4):                   # tyres under the bumper
        cv.poly(cv.front_quad(z + 0.5, xw, xw + 0.3, 0.0, 0.35), (18, 18, 20), CAR)
    cv.poly(cv.front_quad(z, x0, x1, 0.22, belt), c.colour, CAR)
    cv.poly(cv.front_quad(z, x0, x1, 0.22, 0.36), (30, 30, 34), CAR)
    light = (250, 240, 200) if c.oncoming else (200, 25, 25)
    for xl in (x0 + 0.08, x1 - 0.38):
        cv.poly(cv.front_quad(z, xl, xl + 0.3, belt - 0.22, belt - 0.08), light, CAR)
    xm = (x0 + x1) / 2
    cv.poly(cv.front_quad(z, xm - 0.26, xm + 0.26, 0.4, 0.52), (235, 235, 230), CAR)


def draw_person(cv: Canvas, p: Person) -> None:
    if p.z - cv.cam.z < NEAR + 0.5:
        return
    u, v, s = cv.billboard(p.x, p.z)
    k = max(p.h / 1.75 * s, MIN_PERSON * cv.H / 1.75)
    cv.ellipse((u, v), (0.35 * k, 0.08 * k), SHADOW, None)
    swing = p.stride * np.sin(p.z * 2 * np.pi / 1.4)

    def pt(dx: float, dy: float) -> list[float]:
        return [u + dx * k, v - dy * k]

    for side in (-1, 1):
        foot = side * (0.1 + swing)
        cv.poly(np.array([pt(side * 0.0, 0.9), pt(side * 0.21, 0.9), pt(foot + 0.09, 0.0),
                          pt(foot - 0.09, 0.0)]), p.pants, PERSON)
        arm = 0.5 * abs(swing)
        cv.poly(np.array([pt(side * 0.18, 1.44), pt(side * 0.31, 1.4), pt(side * (0.3 + arm), 0.78),
                          pt(side * (0.19 + arm), 0.78)]), shade(p.shirt, 0.85), PERSON)
        cv.circle(tuple(pt(side * (0.245 + arm), 0.76)), 0.065 * k, p.skin, PERSON)
    cv.poly(np.array([pt(-0.23, 1.46), pt(0.23, 1.46), pt(0.21, 0.74), pt(-0.21, 0.74)]), p.shirt, PERSON)
    cv.rect(u - 0.06 * k, v - 1.53 * k, u + 0.06 * k, v - 1.42 * k, p.skin, PERSON)
    cv.circle(tuple(pt(0, 1.62)), 0.125 * k, p.skin, PERSON)
    cv.ellipse(tuple(pt(0, 1.63)), (0.13 * k, 0.13 * k), p.hair, PERSON, 180, 360)


def draw_hood(cv: Canvas, world: World) -> None:
    look = world.look
    if look.hood is None:
        return
    H, W = cv.H, cv.W
    u = np.linspace(-0.02, 1.02, 40)
    top = 1.0 - look.hood_depth * (1.0 - 0.55 * (2 * u - 1) ** 2)
    pts = np.concatenate([np.stack([u * W, top * H], 1), [[1.02 * W, H + 2], [-0.02 * W, H + 2]]])
    cv.poly(pts, look.hood, EGO_VEHICLE)
    band = np.stack([u[8:32] * W, (top[8:32] + 0.25 * look.hood_depth) * H], 1)
    cv.poly(np.concatenate([band, band[::-1] + [0, 0.12 * look.hood_depth * H]]), shade(look.hood, 1.6), None)
