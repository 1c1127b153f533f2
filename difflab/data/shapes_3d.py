"""Multi-view renders of simple 3D solids with known cameras (for score distillation, radiance
fields and novel-view methods).

Solids are signed distance functions in a world frame with +y up, fitting in the unit ball;
images are sphere-traced in numpy with Lambertian shading and 2x2 supersampling. Camera poses are
4x4 camera-to-world matrices in the OpenGL/NeRF convention (the camera looks along its -z axis,
+y is up in the image), and the pinhole focal length is in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from difflab.data.shapes_geometry import BACKGROUNDS, COLOURS, check_names

SOLIDS = ("sphere", "cube", "cylinder", "torus")
LIGHT_DIRECTION = np.array([0.5, 1.0, 0.7]) / np.linalg.norm([0.5, 1.0, 0.7])


def solid_sdf(solid: str, p: np.ndarray) -> np.ndarray:
    """Signed distance from points ``p`` ``[..., 3]`` to ``solid`` (one of :data:`SOLIDS`)."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    if solid == "sphere":
        return np.sqrt(x * x + y * y + z * z) - 0.8
    if solid == "cube":
        q = np.abs(p) - 0.55
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(axis=-1), 0)
    if solid == "cylinder":
        dx, dy = np.sqrt(x * x + z * z) - 0.55, np.abs(y) - 0.7
        return np.hypot(np.maximum(dx, 0), np.maximum(dy, 0)) + np.minimum(np.maximum(dx, dy), 0)
    if solid == "torus":
        return np.hypot(np.sqrt(x * x + z * z) - 0.6, y) - 0.25
    raise ValueError(f"unknown solid {solid!r}; valid solids are: {', '.join(SOLIDS)}")


def camera_pose(azimuth: float, elevation: float, radius: float = 3.0) -> np.ndarray:
    """Camera-to-world ``[4, 4]`` of a camera at ``radius`` looking at the origin; angles in radians
    (azimuth about +y from +z, elevation above the xz plane)."""
    position = radius * np.array(
        [
            np.cos(elevation) * np.sin(azimuth),
            np.sin(elevation),
            np.cos(elevation) * np.cos(azimuth),
        ]
    )
    back = position / np.linalg.norm(position)  # camera +z points away from the target
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, back, position
    return pose


def orbit_poses(
    num_views: int, elevation_deg: float = 20.0, radius: float = 3.0, start_deg: float = 0.0
) -> np.ndarray:
    """``num_views`` poses evenly spaced in azimuth on a circle at ``elevation_deg``: ``[V, 4, 4]``."""
    azimuths = np.deg2rad(start_deg) + 2 * np.pi * np.arange(num_views) / num_views
    return np.stack([camera_pose(a, np.deg2rad(elevation_deg), radius) for a in azimuths])


def focal_length(size: int, fov_deg: float = 40.0) -> float:
    """Pinhole focal length in pixels for a square image of ``size`` with field of view ``fov_deg``."""
    return 0.5 * size / np.tan(np.deg2rad(fov_deg) / 2)


def camera_rays(
    pose: np.ndarray, size: int, focal: float, supersample: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Ray origins and unit directions ``[size*s, size*s, 3]`` of a camera (pixel-centre samples)."""
    n = size * supersample
    u = (np.arange(n) + 0.5) / supersample - size / 2
    dirs = np.stack(
        np.broadcast_arrays(u[None, :] / focal, -u[:, None] / focal, -np.ones((1, 1))), axis=-1
    )
    world = dirs @ pose[:3, :3].T
    world /= np.linalg.norm(world, axis=-1, keepdims=True)
    return np.broadcast_to(pose[:3, 3], world.shape), world


def render_solid(
    solid: str,
    colour: str,
    pose: np.ndarray,
    size: int = 32,
    fov_deg: float = 40.0,
    background: str = "grey",
    supersample: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sphere-trace one view: ``(image [H, W, 3] in [0, 1], alpha [H, W], depth [H, W])`` where
    depth is the distance along the ray (``inf`` on background pixels)."""
    check_names("colour", colour, tuple(COLOURS))
    check_names("background", background, tuple(BACKGROUNDS))
    origins, dirs = camera_rays(pose, size, focal_length(size, fov_deg), supersample)
    t = np.zeros(dirs.shape[:2])
    for _ in range(80):
        t += solid_sdf(solid, origins + t[..., None] * dirs)
    points = origins + t[..., None] * dirs
    hit = np.abs(solid_sdf(solid, points)) < 1e-3
    eps = 1e-4
    normals = np.stack(
        [
            solid_sdf(solid, points + eps * e) - solid_sdf(solid, points - eps * e)
            for e in np.eye(3)
        ],
        axis=-1,
    )
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    shade = 0.35 + 0.65 * np.clip(normals @ LIGHT_DIRECTION, 0, 1)
    fine = np.where(
        hit[..., None],
        shade[..., None] * np.asarray(COLOURS[colour]),
        np.asarray(BACKGROUNDS[background]),
    )
    s = supersample
    image = fine.reshape(size, s, size, s, 3).mean(axis=(1, 3))
    alpha = hit.reshape(size, s, size, s).mean(axis=(1, 3))
    depth = np.where(hit, t, np.inf).reshape(size, s, size, s).min(axis=(1, 3))
    return image.astype(np.float32), alpha.astype(np.float32), depth.astype(np.float32)


@dataclass(frozen=True)
class MultiView:
    """Views of one solid: ``images [V, H, W, 3]``, ``alphas``/``depths [V, H, W]``,
    ``poses [V, 4, 4]`` (camera-to-world), ``focal`` in pixels, and a caption."""

    images: np.ndarray
    alphas: np.ndarray
    depths: np.ndarray
    poses: np.ndarray
    focal: float
    caption: str


def multiview(
    solid: str,
    colour: str,
    num_views: int = 8,
    size: int = 32,
    elevation_deg: float = 20.0,
    fov_deg: float = 40.0,
) -> MultiView:
    """Render ``num_views`` views of a ``colour`` ``solid`` on an orbit (see :func:`orbit_poses`)."""
    check_names("solid", solid, SOLIDS)
    poses = orbit_poses(num_views, elevation_deg)
    views = [render_solid(solid, colour, pose, size, fov_deg) for pose in poses]
    images, alphas, depths = (np.stack(v) for v in zip(*views, strict=True))
    article = "an" if colour[0] in "aeiou" else "a"
    return MultiView(
        images, alphas, depths, poses, focal_length(size, fov_deg), f"{article} {colour} {solid}"
    )
