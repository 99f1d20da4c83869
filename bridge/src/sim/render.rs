//! Software ray caster for the simulated SO-101 scene.
//!
//! One primary ray per pixel through a pinhole camera, intersected with a
//! handful of analytic primitives (the table plane, oriented boxes for the cube
//! and the fingers, capsules for the arm links), Lambertian shading from one
//! fixed directional light plus ambient. No allocation per frame: the scene is a
//! fixed-size array built on the stack, and the image is rendered in 8x8 tiles,
//! each testing only the primitives whose bounding sphere meets its frustum.
//!
//! Cameras follow the OpenCV convention: `x` right, `y` down, `z` forward
//! (optical axis); pixel `(u, v)` has its centre at `(u + 0.5, v + 0.5)`.

use nalgebra::{Isometry3, Point3, Vector3};

/// Pinhole camera with square pixels and no distortion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PinholeCamera {
    /// Image width (pixels).
    pub width: usize,
    /// Image height (pixels).
    pub height: usize,
    /// Focal length along `x` (pixels).
    pub fx: f64,
    /// Focal length along `y` (pixels).
    pub fy: f64,
    /// Principal point `x` (pixels).
    pub cx: f64,
    /// Principal point `y` (pixels).
    pub cy: f64,
    /// Camera-to-world pose (OpenCV camera axes).
    pub pose: Isometry3<f64>,
}

impl PinholeCamera {
    /// Camera at `eye` looking at `target`, `up` giving the image's upward
    /// direction, horizontal field of view `hfov` (rad), principal point at the
    /// image centre.
    pub fn look_at(
        eye: &Point3<f64>,
        target: &Point3<f64>,
        up: &Vector3<f64>,
        hfov: f64,
        width: usize,
        height: usize,
    ) -> Self {
        Self::with_pose(Self::look_at_pose(eye, target, up), hfov, width, height)
    }

    /// Camera with a given camera-to-world pose and horizontal field of view.
    pub fn with_pose(pose: Isometry3<f64>, hfov: f64, width: usize, height: usize) -> Self {
        let f = (width as f64 / 2.0) / (hfov / 2.0).tan();
        Self {
            width,
            height,
            fx: f,
            fy: f,
            cx: width as f64 / 2.0,
            cy: height as f64 / 2.0,
            pose,
        }
    }

    /// Camera-to-world pose of an OpenCV camera at `eye` looking at `target`.
    pub fn look_at_pose(
        eye: &Point3<f64>,
        target: &Point3<f64>,
        up: &Vector3<f64>,
    ) -> Isometry3<f64> {
        let z = (target - eye).normalize();
        let mut x = z.cross(up);
        if x.norm() < 1e-9 {
            x = z.cross(&Vector3::x());
        }
        let x = x.normalize();
        let y = z.cross(&x);
        let rot = nalgebra::Rotation3::from_basis_unchecked(&[x, y, z]);
        Isometry3::from_parts(
            nalgebra::Translation3::from(eye.coords),
            nalgebra::UnitQuaternion::from_rotation_matrix(&rot),
        )
    }

    /// Pixel coordinates `(u, v)` of a world point, `None` behind the camera.
    pub fn project(&self, p: &Point3<f64>) -> Option<(f64, f64)> {
        let c = self.pose.inverse_transform_point(p);
        if c.z <= 1e-9 {
            return None;
        }
        Some((self.fx * c.x / c.z + self.cx, self.fy * c.y / c.z + self.cy))
    }

    /// World-frame ray (origin, unit direction) through pixel coordinates `(u, v)`
    /// (continuous; the centre of pixel `(i, j)` is `(i + 0.5, j + 0.5)`).
    pub fn pixel_ray(&self, u: f64, v: f64) -> (Point3<f64>, Vector3<f64>) {
        let d = Vector3::new((u - self.cx) / self.fx, (v - self.cy) / self.fy, 1.0);
        (
            Point3::from(self.pose.translation.vector),
            (self.pose.rotation * d).normalize(),
        )
    }

    /// Intersection of the ray through `(u, v)` with the horizontal plane `z = z0`
    /// (world), `None` if the ray does not hit it in front of the camera.
    pub fn backproject_to_plane_z(&self, u: f64, v: f64, z0: f64) -> Option<Point3<f64>> {
        let (o, d) = self.pixel_ray(u, v);
        if d.z.abs() < 1e-12 {
            return None;
        }
        let t = (z0 - o.z) / d.z;
        (t > 0.0).then(|| o + d * t)
    }
}

type V3 = [f64; 3];

#[inline(always)]
fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
#[inline(always)]
fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
#[inline(always)]
fn mad(a: V3, b: V3, s: f64) -> V3 {
    [a[0] + b[0] * s, a[1] + b[1] * s, a[2] + b[2] * s]
}
fn v3(v: &Vector3<f64>) -> V3 {
    [v.x, v.y, v.z]
}

/// Shape of a primitive, in world coordinates.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Capsule: segment `a`-`b`, radius `r`.
    Capsule { a: V3, b: V3, r: f64 },
    /// Oriented box: centre, axes (unit, world), half extents.
    Obb { c: V3, axes: [V3; 3], half: V3 },
}

#[derive(Debug, Clone, Copy)]
struct Prim {
    shape: Shape,
    color: [f32; 3],
    /// Bounding sphere.
    bc: V3,
    br: f64,
}

/// Largest number of primitives a scene holds.
pub const MAX_PRIMS: usize = 16;

/// Colours (linear 0..1) of the scene's materials.
pub mod colors {
    /// The cube: saturated red.
    pub const CUBE: [f32; 3] = [0.86, 0.10, 0.08];
    /// Arm links: off-white printed plastic.
    pub const ARM: [f32; 3] = [0.88, 0.86, 0.78];
    /// Base / motors: dark grey.
    pub const DARK: [f32; 3] = [0.22, 0.22, 0.25];
    /// Fingers: mid grey.
    pub const FINGER: [f32; 3] = [0.45, 0.47, 0.52];
    /// Table top: light wood.
    pub const TABLE: [f32; 3] = [0.78, 0.66, 0.50];
    /// Floor beyond the table edge.
    pub const FLOOR: [f32; 3] = [0.30, 0.31, 0.33];
    /// Background (rays hitting nothing).
    pub const SKY: [f32; 3] = [0.16, 0.18, 0.22];
}

/// Table top extent in `base` (x_min, x_max, y_min, y_max), metres.
pub const TABLE_EXTENT: [f64; 4] = [-0.40, 0.40, -0.55, 0.20];
/// Spacing of the faint grid drawn on the table (m).
pub const GRID_SPACING: f64 = 0.05;
/// Direction *towards* the light (unit, world).
pub const LIGHT_DIR: [f64; 3] = [0.30, 0.20, 0.9327379];
/// Ambient term of the shading.
pub const AMBIENT: f32 = 0.35;

/// A fixed-capacity list of primitives (no heap).
#[derive(Debug, Clone, Copy)]
pub struct Scene {
    prims: [Prim; MAX_PRIMS],
    n: usize,
}

impl Default for Scene {
    fn default() -> Self {
        Self::new()
    }
}

impl Scene {
    /// Empty scene (the table is implicit).
    pub fn new() -> Self {
        let dummy = Prim {
            shape: Shape::Capsule {
                a: [0.0; 3],
                b: [0.0; 3],
                r: 0.0,
            },
            color: [0.0; 3],
            bc: [0.0; 3],
            br: 0.0,
        };
        Self {
            prims: [dummy; MAX_PRIMS],
            n: 0,
        }
    }

    fn push(&mut self, p: Prim) {
        if self.n < MAX_PRIMS {
            self.prims[self.n] = p;
            self.n += 1;
        }
    }

    /// Add a capsule between two world points.
    pub fn capsule(&mut self, a: &Vector3<f64>, b: &Vector3<f64>, r: f64, color: [f32; 3]) {
        let (a, b) = (v3(a), v3(b));
        let bc = [
            (a[0] + b[0]) / 2.0,
            (a[1] + b[1]) / 2.0,
            (a[2] + b[2]) / 2.0,
        ];
        let half = sub(b, a);
        let br = dot(half, half).sqrt() / 2.0 + r;
        self.push(Prim {
            shape: Shape::Capsule { a, b, r },
            color,
            bc,
            br,
        });
    }

    /// Add a box: `pose` places the box frame (centre, axes) in the world.
    pub fn obb(&mut self, pose: &Isometry3<f64>, half: [f64; 3], color: [f32; 3]) {
        let m = pose.rotation.to_rotation_matrix();
        let axes = [
            v3(&m.matrix().column(0).into_owned()),
            v3(&m.matrix().column(1).into_owned()),
            v3(&m.matrix().column(2).into_owned()),
        ];
        let c = v3(&pose.translation.vector);
        self.push(Prim {
            shape: Shape::Obb { c, axes, half },
            color,
            bc: c,
            br: dot(half, half).sqrt(),
        });
    }
}

/// Nearest hit `t` and unit normal of a ray with a capsule (`d` unit).
#[inline]
fn hit_capsule(o: V3, d: V3, a: V3, b: V3, r: f64) -> Option<(f64, V3)> {
    // Inigo Quilez' capsule intersection.
    let ba = sub(b, a);
    let oa = sub(o, a);
    let baba = dot(ba, ba);
    let bard = dot(ba, d);
    let baoa = dot(ba, oa);
    let rdoa = dot(d, oa);
    let oaoa = dot(oa, oa);
    let qa = baba - bard * bard;
    let qb = baba * rdoa - baoa * bard;
    let qc = baba * oaoa - baoa * baoa - r * r * baba;
    let h = qb * qb - qa * qc;
    let mut t = f64::INFINITY;
    if h >= 0.0 && qa > 1e-12 {
        let tc = (-qb - h.sqrt()) / qa;
        let y = baoa + tc * bard;
        if y > 0.0 && y < baba && tc > 0.0 {
            t = tc;
        }
    }
    if !t.is_finite() {
        // Caps.
        for end in [a, b] {
            let oc = sub(o, end);
            let bq = dot(d, oc);
            let cq = dot(oc, oc) - r * r;
            let hq = bq * bq - cq;
            if hq >= 0.0 {
                let tq = -bq - hq.sqrt();
                if tq > 0.0 && tq < t {
                    t = tq;
                }
            }
        }
    }
    if !t.is_finite() {
        return None;
    }
    let p = mad(o, d, t);
    let pa = sub(p, a);
    let s = (dot(pa, ba) / baba.max(1e-12)).clamp(0.0, 1.0);
    let n = sub(pa, [ba[0] * s, ba[1] * s, ba[2] * s]);
    let l = dot(n, n).sqrt().max(1e-12);
    Some((t, [n[0] / l, n[1] / l, n[2] / l]))
}

/// Nearest hit `t` and unit normal of a ray with an oriented box (slab test).
#[inline]
fn hit_obb(o: V3, d: V3, c: V3, axes: &[V3; 3], half: V3) -> Option<(f64, V3)> {
    let oc = sub(o, c);
    let mut tmin = f64::NEG_INFINITY;
    let mut tmax = f64::INFINITY;
    let mut axis = 0;
    let mut sign = 1.0;
    for i in 0..3 {
        let e = dot(axes[i], oc);
        let f = dot(axes[i], d);
        if f.abs() < 1e-12 {
            if e.abs() > half[i] {
                return None;
            }
            continue;
        }
        let t1 = (-half[i] - e) / f;
        let t2 = (half[i] - e) / f;
        let (tn, tf, s) = if t1 < t2 {
            (t1, t2, -1.0)
        } else {
            (t2, t1, 1.0)
        };
        if tn > tmin {
            tmin = tn;
            axis = i;
            sign = s;
        }
        tmax = tmax.min(tf);
        if tmin > tmax {
            return None;
        }
    }
    if tmin <= 0.0 || !tmin.is_finite() {
        return None;
    }
    let a = axes[axis];
    Some((tmin, [a[0] * sign, a[1] * sign, a[2] * sign]))
}

#[inline]
fn shade(color: [f32; 3], n: V3) -> [f32; 3] {
    let l = dot(n, LIGHT_DIR).max(0.0) as f32;
    let k = AMBIENT + (1.0 - AMBIENT) * l;
    [color[0] * k, color[1] * k, color[2] * k]
}

#[inline]
fn table_color(x: f64, y: f64) -> [f32; 3] {
    let [x0, x1, y0, y1] = TABLE_EXTENT;
    if x < x0 || x > x1 || y < y0 || y > y1 {
        return colors::FLOOR;
    }
    let (sx, sy) = (x / GRID_SPACING, y / GRID_SPACING);
    let (gx, gy) = (sx - sx.floor(), sy - sy.floor());
    let line = gx < 0.06 || gy < 0.06;
    let border = x - x0 < 0.015 || x1 - x < 0.015 || y - y0 < 0.015 || y1 - y < 0.015;
    let k = if border {
        0.55
    } else if line {
        0.88
    } else {
        1.0
    };
    [
        colors::TABLE[0] * k,
        colors::TABLE[1] * k,
        colors::TABLE[2] * k,
    ]
}

/// Side length (pixels) of the square tiles used for culling.
const TILE: usize = 8;

/// Render `scene` (plus the table) through `cam` into `out`, RGB8 row-major
/// (HWC). Only whole pixels that fit in `out` are written.
///
/// Culling: the image is cut into 8x8 tiles; a primitive is tested only on the
/// tiles whose view frustum (four planes through the eye) its bounding sphere
/// touches.
pub fn render(scene: &Scene, cam: &PinholeCamera, out: &mut [u8]) {
    let n = scene.n;
    let (w, h) = (cam.width, cam.height);
    // Bounding spheres in camera coordinates.
    let mut spheres = [([0.0f64; 3], 0.0f64); MAX_PRIMS];
    for (sph, p) in spheres.iter_mut().zip(scene.prims.iter()).take(n) {
        let c = cam
            .pose
            .inverse_transform_point(&Point3::new(p.bc[0], p.bc[1], p.bc[2]));
        *sph = ([c.x, c.y, c.z], p.br);
    }
    let m = cam.pose.rotation.to_rotation_matrix();
    let r = m.matrix();
    let rm = [
        [r[(0, 0)], r[(0, 1)], r[(0, 2)]],
        [r[(1, 0)], r[(1, 1)], r[(1, 2)]],
        [r[(2, 0)], r[(2, 1)], r[(2, 2)]],
    ];
    let o = v3(&cam.pose.translation.vector);
    // Eye-to-centre vectors and squared lengths, for the per-ray sphere check.
    let mut oc = [([0.0f64; 3], 0.0f64); MAX_PRIMS];
    for (e, p) in oc.iter_mut().zip(scene.prims.iter()).take(n) {
        let v = sub(p.bc, o);
        *e = (v, dot(v, v));
    }
    let (ifx, ify) = (1.0 / cam.fx, 1.0 / cam.fy);
    let table_k = shade([1.0; 3], [0.0, 0.0, 1.0])[0];
    let normalized = |a: f64, b: f64, c: f64| {
        let l = (a * a + b * b + c * c).sqrt();
        [a / l, b / l, c / l]
    };
    for ty in (0..h).step_by(TILE) {
        let ty1 = (ty + TILE).min(h);
        let y0 = (ty as f64 - cam.cy) * ify;
        let y1 = (ty1 as f64 - cam.cy) * ify;
        for tx in (0..w).step_by(TILE) {
            let tx1 = (tx + TILE).min(w);
            let x0 = (tx as f64 - cam.cx) * ifx;
            let x1 = (tx1 as f64 - cam.cx) * ifx;
            // Inward normals of the tile frustum's side planes.
            let planes = [
                normalized(1.0, 0.0, -x0),
                normalized(-1.0, 0.0, x1),
                normalized(0.0, 1.0, -y0),
                normalized(0.0, -1.0, y1),
            ];
            let mut list = [0usize; MAX_PRIMS];
            let mut count = 0;
            for (i, (c, rad)) in spheres.iter().take(n).enumerate() {
                let inside = c[2] > -rad && planes.iter().all(|pl| dot(*pl, *c) >= -rad);
                if inside {
                    list[count] = i;
                    count += 1;
                }
            }
            for vi in ty..ty1 {
                let yc = (vi as f64 + 0.5 - cam.cy) * ify;
                for ui in tx..tx1 {
                    let idx = (vi * w + ui) * 3;
                    let Some(px) = out.get_mut(idx..idx + 3) else {
                        continue;
                    };
                    let xc = (ui as f64 + 0.5 - cam.cx) * ifx;
                    let dw = [
                        rm[0][0] * xc + rm[0][1] * yc + rm[0][2],
                        rm[1][0] * xc + rm[1][1] * yc + rm[1][2],
                        rm[2][0] * xc + rm[2][1] * yc + rm[2][2],
                    ];
                    let mut best_t = f64::INFINITY;
                    let mut col = colors::SKY;
                    // Table / floor plane z = 0 (the floor is drawn at the same
                    // height); `t` in units of the unnormalised `dw`.
                    let mut plane_t = f64::INFINITY;
                    if dw[2] < -1e-12 {
                        let t = -o[2] / dw[2];
                        if t > 0.0 {
                            plane_t = t;
                            let p = mad(o, dw, t);
                            let c = table_color(p[0], p[1]);
                            col = [c[0] * table_k, c[1] * table_k, c[2] * table_k];
                        }
                    }
                    let inv = if count > 0 {
                        1.0 / dot(dw, dw).sqrt()
                    } else {
                        1.0
                    };
                    let d = [dw[0] * inv, dw[1] * inv, dw[2] * inv];
                    if plane_t.is_finite() {
                        best_t = plane_t / inv;
                    }
                    for &i in &list[..count] {
                        let p = &scene.prims[i];
                        // Bounding sphere: missed, behind, or farther than the best hit.
                        let (v, vv) = oc[i];
                        let tca = dot(v, d);
                        if vv - tca * tca > p.br * p.br || tca + p.br < 0.0 || tca - p.br > best_t {
                            continue;
                        }
                        let hit = match &p.shape {
                            Shape::Capsule { a, b, r } => hit_capsule(o, d, *a, *b, *r),
                            Shape::Obb { c, axes, half } => hit_obb(o, d, *c, axes, *half),
                        };
                        if let Some((t, nrm)) = hit {
                            if t < best_t {
                                best_t = t;
                                col = shade(p.color, nrm);
                            }
                        }
                    }
                    px[0] = (col[0].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                    px[1] = (col[1].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                    px[2] = (col[2].clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_and_backproject_agree() {
        let cam = PinholeCamera::look_at(
            &Point3::new(0.0, -0.4, 0.3),
            &Point3::new(0.0, -0.1, 0.0),
            &Vector3::z(),
            1.0,
            64,
            48,
        );
        let p = Point3::new(0.05, -0.12, 0.0);
        let (u, v) = cam.project(&p).expect("in front");
        let q = cam
            .backproject_to_plane_z(u, v, 0.0)
            .expect("hits the table");
        assert!((p - q).norm() < 1e-9);
        // Image up is world up: a higher point projects to a smaller v.
        let (_, v2) = cam
            .project(&Point3::new(0.05, -0.12, 0.05))
            .expect("in front");
        assert!(v2 < v);
    }

    #[test]
    fn primitives_intersect_where_expected() {
        let (t, n) = hit_obb(
            [0.0, 0.0, 1.0],
            [0.0, 0.0, -1.0],
            [0.0; 3],
            &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            [0.1, 0.1, 0.1],
        )
        .expect("hit");
        assert!((t - 0.9).abs() < 1e-12 && n == [0.0, 0.0, 1.0]);
        let (t, n) = hit_capsule(
            [1.0, 0.0, 0.5],
            [-1.0, 0.0, 0.0],
            [0.0; 3],
            [0.0, 0.0, 1.0],
            0.1,
        )
        .expect("hit");
        assert!((t - 0.9).abs() < 1e-12 && (n[0] - 1.0).abs() < 1e-12);
        assert!(hit_capsule(
            [1.0, 0.0, 0.5],
            [1.0, 0.0, 0.0],
            [0.0; 3],
            [0.0, 0.0, 1.0],
            0.1
        )
        .is_none());
    }
}
