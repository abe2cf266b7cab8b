"""A picture and its label map drawn together: every shape goes to both with the same geometry."""
from __future__ import annotations

import cv2
import numpy as np

from samples.scene import Camera, Colour

SHIFT = 4                   # sub-pixel bits for OpenCV drawing
_ONE = 1 << SHIFT


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(np.clip(pts, -1e6, 1e6) * _ONE).astype(np.int32)


class Canvas:
    """RGB uint8 image + uint8 labelId map of one frame, with a camera for world-space shapes.

    ``inst`` records which object painted each label pixel (0: none): shapes drawn while
    ``instance`` is set (see :meth:`begin_instance`) write it, every other labelled shape clears it,
    so occlusion is the same as in the label map.
    """

    def __init__(self, H: int, W: int, camera: Camera) -> None:
        self.H, self.W, self.cam = H, W, camera
        self.img = np.zeros((H, W, 3), np.uint8)
        self.lab = np.zeros((H, W), np.uint8)
        self.inst = np.zeros((H, W), np.uint16)
        self.instance = 0
        self._instances = 0

    def begin_instance(self) -> None:
        """The next labelled shapes belong to a new object (a car, a person) until :meth:`end_instance`."""
        self._instances += 1
        self.instance = self._instances

    def end_instance(self) -> None:
        self.instance = 0

    def instance_ids(self) -> np.ndarray:
        """Cityscapes ``*_gtFine_instanceIds.png``: labelId * 1000 + k for objects of classes with
        instances (k counts the visible objects of that class from 0), the labelId elsewhere."""
        out = self.lab.astype(np.int32)
        for label in np.unique(self.lab[self.inst > 0]):
            ids = np.unique(self.inst[(self.inst > 0) & (self.lab == label)])
            for k, obj in enumerate(ids):
                out[(self.inst == obj) & (self.lab == label)] = int(label) * 1000 + k
        return out.astype(np.uint16)

    # -- screen space ------------------------------------------------------------------------
    def poly(self, pts: np.ndarray, colour: Colour, label: int | None) -> None:
        """Fill one polygon given in float pixels; ``label=None`` paints colour only (shading)."""
        self.polys([pts], colour, label)

    def polys(self, polys: list[np.ndarray], colour: Colour, label: int | None) -> None:
        if not polys:
            return
        fixed = [_fixed(np.asarray(p, float)) for p in polys]
        cv2.fillPoly(self.img, fixed, tuple(int(c) for c in colour), cv2.LINE_AA, SHIFT)
        if label is not None:
            cv2.fillPoly(self.lab, fixed, int(label), cv2.LINE_8, SHIFT)
            cv2.fillPoly(self.inst, fixed, self.instance, cv2.LINE_8, SHIFT)

    def circle(self, centre: tuple[float, float], radius: float, colour: Colour, label: int | None) -> None:
        c = tuple(int(round(v * _ONE)) for v in centre)
        r = max(int(round(radius * _ONE)), _ONE // 2)
        cv2.circle(self.img, c, r, tuple(int(v) for v in colour), -1, cv2.LINE_AA, SHIFT)
        if label is not None:
            cv2.circle(self.lab, c, r, int(label), -1, cv2.LINE_8, SHIFT)
            cv2.circle(self.inst, c, r, self.instance, -1, cv2.LINE_8, SHIFT)

    def ellipse(self, centre, axes, colour: Colour, label: int | None, start: float = 0, end: float = 360) -> None:
        c = tuple(int(round(v * _ONE)) for v in centre)
        a = tuple(max(int(round(v * _ONE)), _ONE // 2) for v in axes)
        cv2.ellipse(self.img, c, a, 0, start, end, tuple(int(v) for v in colour), -1, cv2.LINE_AA, SHIFT)
        if label is not None:
            cv2.ellipse(self.lab, c, a, 0, start, end, int(label), -1, cv2.LINE_8, SHIFT)
            cv2.ellipse(self.inst, c, a, 0, start, end, self.instance, -1, cv2.LINE_8, SHIFT)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour, label: int | None) -> None:
        self.poly(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), colour, label)

    def darken(self, pts: np.ndarray, factor: float) -> None:
        """Multiply the image inside a polygon by ``factor`` (a shadow); labels unchanged."""
        mask = np.zeros((self.H, self.W), np.uint8)
        cv2.fillPoly(mask, [_fixed(pts)], 255, cv2.LINE_AA, SHIFT)
        weight = 1.0 - (1.0 - factor) * (mask.astype(np.float32) / 255.0)
        self.img[:] = np.clip(self.img * weight[..., None], 0, 255).astype(np.uint8)

    # -- world space -------------------------------------------------------------------------
    def project(self, X, Y, Z) -> np.ndarray:
        return self.cam.project(self.H, self.W, X, Y, Z)

    def visible_z(self, z0: float, z1: float, near: float) -> tuple[float, float] | None:
        """Clip a Z range to the part in front of the near plane (None if nothing is left)."""
        z0 = max(z0, self.cam.z + near)
        return (z0, z1) if z1 > z0 else None

    def ground_quad(self, x0: float, x1: float, z0: float, z1: float, y: float = 0.0) -> np.ndarray:
        return self.project([x0, x1, x1, x0], y, [z0, z0, z1, z1])

    def side_quad(self, x: float, z0: float, z1: float, y0: float, y1: float) -> np.ndarray:
        """Quad on the plane X = x (a facade or a car side)."""
        return self.project(x, [y0, y0, y1, y1], [z0, z1, z1, z0])

    def front_quad(self, z: float, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """Quad on the plane Z = z (facing the camera)."""
        return self.project([x0, x1, x1, x0], [y0, y0, y1, y1], z)

    def billboard(self, x: float, z: float) -> tuple[float, float, float]:
        """(u, v, pixels per metre) of a ground point, for shapes that face the camera."""
        u, v = self.project(x, 0.0, z)[0]
        return float(u), float(v), self.cam.scale(self.W, z)
