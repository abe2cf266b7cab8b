"""Sky, distant skyline, ground surfaces and building facades."""
from __future__ import annotations

import numpy as np

from samples.canvas import Canvas
from samples.scene import (BUILDING, NEAR, ROAD, SIDEWALK, SKY, TERRAIN, Building, World, shade)

GROUND_FAR = 4000.0        # metres: the ground reaches (almost) the horizon
DETAIL_FAR = 90.0          # metres: no markings / windows beyond this distance


def draw_sky(cv: Canvas, world: World) -> None:
    look, H, W = world.look, cv.H, cv.W
    hv = world.camera.horizon
    t = np.clip(np.arange(H, dtype=np.float32) / (hv * H), 0.0, 1.0)[:, None]
    grad = (np.asarray(look.sky_top, np.float32) * (1 - t) + np.asarray(look.sky_bottom, np.float32) * t)
    cv.img[:] = np.round(grad[:, None, :]).astype(np.uint8)
    cv.lab[:] = SKY
    for u, v, rx, ry, grey in look.clouds:
        for k in range(3):
            cv.ellipse(((u + 0.6 * rx * (k - 1)) * W, (v + 0.3 * ry * (k % 2)) * hv * H),
                       (rx * W * (1 - 0.25 * abs(k - 1)), ry * H * (1 + 0.3 * (k == 1))),
                       (grey, grey, min(grey + 6, 255)), None)
    for u0, u1, height, colour in look.skyline:
        cv.rect(u0 * W, (hv - height) * H, u1 * W, (hv + 0.004) * H, colour, BUILDING)
        for k in range(1, int(height / 0.018) + 1):
            y = (hv - height + k * 0.018) * H
            cv.rect(u0 * W, y - 0.004 * H, u1 * W, y, shade(colour, 0.7), None)


def draw_ground(cv: Canvas, world: World) -> None:
    st, cam = world.street, world.camera
    H, W = cv.H, cv.W
    zr = cv.visible_z(cam.z, cam.z + GROUND_FAR, NEAR)
    if zr is None:
        return
    z0, z1 = zr
    hv = cam.horizon * H
    cv.rect(-2, hv - 0.5, W + 2, H + 2, st.sidewalk_colour, SIDEWALK)
    _draw_tiles(cv, world)
    for i, side in enumerate((-1, 1)):
        if st.terrain[i] > 0:
            fx = st.facade_x(side)
            cv.poly(cv.ground_quad(fx, fx - side * st.terrain[i], z0, z1), st.terrain_colour, TERRAIN)
    left, right = st.road
    cv.poly(cv.ground_quad(left, right, z0, z1), st.road_colour, ROAD)
    for edge, side in ((left, -1), (right, 1)):       # curb faces, part of the sidewalk
        curb = shade(st.sidewalk_colour, 1.12)
        cv.poly(cv.side_quad(edge, z0, z1, 0.0, st.curb), curb, SIDEWALK)
    _draw_markings(cv, world, z0)
    if world.look.shadow_side:
        s = world.look.shadow_side
        fx = st.facade_x(s)
        cv.darken(cv.ground_quad(fx, fx - s * world.look.shadow_width, z0, z1), world.look.shadow_strength)


def _draw_tiles(cv: Canvas, world: World) -> None:
    st, cam = world.street, world.camera
    line = shade(st.sidewalk_colour, 0.82)
    half = 0.025
    first = np.ceil((cam.z + NEAR + 1.0) / st.tile) * st.tile
    zs = np.arange(first, cam.z + 45.0, st.tile)
    for i, side in enumerate((-1, 1)):
        edge = st.road[i]
        outer = edge + side * st.sidewalk[i]
        polys = [cv.ground_quad(edge, outer, z - half, z + half, st.curb) for z in zs]
        cv.polys(polys, line, None)


def _draw_markings(cv: Canvas, world: World, z_near: float) -> None:
    st, cam = world.street, world.camera
    mark = st.marking_colour
    width = 0.16
    period, dash = 9.0, 3.0
    first = np.floor(z_near / period) * period
    polys = []
    for x in st.lanes:
        for z in np.arange(first, cam.z + DETAIL_FAR, period):
            zr = cv.visible_z(z, z + dash, NEAR)
            if zr:
                polys.append(cv.ground_quad(x - width / 2, x + width / 2, *zr))
    for edge, side in ((st.road[0], -1), (st.road[1], 1)):
        x = edge - side * 0.35
        polys.append(cv.ground_quad(x - 0.06, x + 0.06, z_near, cam.z + GROUND_FAR))
    for zc in st.crosswalks:
        zr = cv.visible_z(zc, zc + 3.5, NEAR)
        if zr:
            xs = np.arange(st.road[0] + 0.4, st.road[1] - 0.4, 1.1)
            polys.extend(cv.ground_quad(x, x + 0.55, *zr) for x in xs)
    cv.polys(polys, mark, ROAD)


def draw_buildings(cv: Canvas, world: World) -> None:
    for b in sorted(world.buildings, key=lambda b: -b.z0):
        _draw_building(cv, world, b)


def _draw_building(cv: Canvas, world: World, b: Building) -> None:
    cam = world.camera
    zr = cv.visible_z(b.z0, b.z1, NEAR)
    if zr is None or zr[0] > cam.z + GROUND_FAR:
        return
    fx = world.street.facade_x(b.side)
    if b.z0 >= cam.z + NEAR:                           # the end wall facing the camera
        cv.poly(cv.front_quad(b.z0, fx, fx + b.side * b.depth, 0.0, b.height), shade(b.colour, 0.72), BUILDING)
    cv.poly(cv.side_quad(fx, zr[0], zr[1], 0.0, b.height), b.colour, BUILDING)
    cv.poly(cv.side_quad(fx, zr[0], zr[1], b.height - 0.5, b.height), shade(b.colour, 0.8), BUILDING)
    _draw_windows(cv, world, b, fx, zr)


def _draw_windows(cv: Canvas, world: World, b: Building, fx: float, zr: tuple[float, float]) -> None:
    cam = world.camera
    rng = np.random.default_rng(b.pattern_seed)
    n_cols = max(int((b.z1 - b.z0 - 1.0) / b.col_w), 0)
    n_floors = max(int((b.height - 1.5) / b.floor_h), 0)
    if n_cols == 0:
        return
    tints = rng.uniform(0.6, 1.6, size=(n_floors + 1, n_cols))
    col_z0 = b.z0 + 0.5 + b.col_w * (np.arange(n_cols) + (1 - b.win_w) / 2)
    col_z1 = col_z0 + b.col_w * b.win_w
    keep = (col_z0 >= zr[0]) & (col_z1 <= min(zr[1], cam.z + DETAIL_FAR))
    groups: dict[int, list[np.ndarray]] = {}
    for f in range(n_floors + 1):
        if f == 0:                                    # shop windows on the ground floor
            y0, y1 = 0.5, min(2.6, b.height - 0.6)
        else:
            y0 = 0.8 + f * b.floor_h - b.floor_h * b.win_h
            y1 = 0.8 + f * b.floor_h
        if y1 > b.height - 0.7 or y1 <= y0:
            continue
        for c in np.nonzero(keep)[0]:
            level = int(np.clip(tints[f, c] * 4, 0, 7))
            groups.setdefault(level, []).append(cv.side_quad(fx, col_z0[c], col_z1[c], y0, y1))
    for level, polys in groups.items():
        cv.polys(polys, shade(b.window, level / 4 + 0.125), BUILDING)
