//! Tactile pressure images of the two gripper pads.
//!
//! Each pad is a `rows x cols` grid of pressure cells over the pad area of its
//! finger (the same area the 4 x 4 taxels cover: 40 mm along the finger, 20 mm
//! across). A cell's pressure is the squeeze pressure times the fraction of the
//! cell the cube's face covers (exact area overlap of two rectangles), so the
//! image is the footprint of the face, anti-aliased at its edges. When the cube
//! moves against the pad (slip), the load shifts toward the leading edge: the
//! pressure is scaled by `1 + shear_gain * (slip . r)`, where `r` is the cell's
//! offset from the contact centre in half face widths and `slip` the face's
//! velocity in the pad plane (m/s), clamped to [0, 2] times the static value.
//! Sensor noise (Gaussian, standard deviation `noise_std`) is added by the
//! caller with its own random stream, and readings never go below 0.
//!
//! Layout: row `r` runs along the finger (from the tip), column `c` across it;
//! a published image stacks pad 0 (fixed finger) above pad 1 (moving finger),
//! `32FC1`, pressure in the taxels' units (`tactile_gain` per radian of squeeze).

/// The pad area in the gripper frame (m): `z` along the finger, `y` across.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PadArea {
    pub z: (f64, f64),
    pub y: (f64, f64),
}

/// Where the cube's face meets a pad.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceContact {
    /// Face centre in the pad plane (m): (z, y).
    pub centre: (f64, f64),
    /// Half the face's edge (m).
    pub half: f64,
    /// Static pressure where the face covers a whole cell.
    pub pressure: f64,
    /// Velocity of the face against the pad (m/s): (z, y).
    pub slip: (f64, f64),
}

/// Image shape and the shear response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TactileImaging {
    pub rows: usize,
    pub cols: usize,
    /// Relative load shift per (m/s of slip x half face width of offset).
    pub shear_gain: f64,
}

/// Overlap of the interval `[a0, a1]` with `[b0, b1]`.
fn overlap(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.1.min(b.1) - a.0.max(b.0)).max(0.0)
}

/// Renders one pad into `out` (`rows * cols` cells, row-major). No contact
/// (`None`) or a non-positive pressure gives zeros.
pub fn render_pad(
    area: &PadArea,
    contact: Option<&FaceContact>,
    im: &TactileImaging,
    out: &mut [f32],
) {
    let n = (im.rows * im.cols).min(out.len());
    out[..n].fill(0.0);
    let Some(c) = contact.filter(|c| c.pressure > 0.0 && c.half > 0.0) else {
        return;
    };
    let dz = (area.z.1 - area.z.0) / im.rows as f64;
    let dy = (area.y.1 - area.y.0) / im.cols as f64;
    let face_z = (c.centre.0 - c.half, c.centre.0 + c.half);
    let face_y = (c.centre.1 - c.half, c.centre.1 + c.half);
    for r in 0..im.rows {
        let z0 = area.z.0 + r as f64 * dz;
        let fz = overlap((z0, z0 + dz), face_z) / dz;
        if fz <= 0.0 {
            continue;
        }
        for col in 0..im.cols {
            let y0 = area.y.0 + col as f64 * dy;
            let fy = overlap((y0, y0 + dy), face_y) / dy;
            let i = r * im.cols + col;
            if fy <= 0.0 || i >= n {
                continue;
            }
            let off_z = (z0 + dz / 2.0 - c.centre.0) / c.half;
            let off_y = (y0 + dy / 2.0 - c.centre.1) / c.half;
            let shear =
                (1.0 + im.shear_gain * (c.slip.0 * off_z + c.slip.1 * off_y)).clamp(0.0, 2.0);
            out[i] = (c.pressure * fz * fy * shear) as f32;
        }
    }
}

/// Adds sensor noise from `normal` (standard normal draws) and clamps at 0.
pub fn add_noise(out: &mut [f32], std: f64, mut normal: impl FnMut() -> f64) {
    if std <= 0.0 {
        return;
    }
    for v in out.iter_mut() {
        *v = (f64::from(*v) + std * normal()).max(0.0) as f32;
    }
}

/// The cells of a 32FC1 image as little-endian bytes (ROS `is_bigendian = 0`).
pub fn to_32fc1_bytes(cells: &[f32], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(cells.len() * 4);
    for v in cells {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AREA: PadArea = PadArea {
        z: (0.0, 0.04),
        y: (-0.01, 0.01),
    };
    const IM: TactileImaging = TactileImaging {
        rows: 16,
        cols: 16,
        shear_gain: 10.0,
    };

    fn face(centre: (f64, f64), half: f64, slip: (f64, f64)) -> FaceContact {
        FaceContact {
            centre,
            half,
            pressure: 2.0,
            slip,
        }
    }

    #[test]
    fn a_known_contact_gives_its_footprint() {
        let mut img = vec![0f32; 256];
        // A 30 mm face centred 15 mm along the pad covers rows 0..12 (2.5 mm cells: 0 to 30 mm)
        // and every column (the pad is 20 mm wide).
        render_pad(
            &AREA,
            Some(&face((0.015, 0.0), 0.015, (0.0, 0.0))),
            &IM,
            &mut img,
        );
        for r in 0..16 {
            for c in 0..16 {
                let want = if r < 12 { 2.0 } else { 0.0 };
                assert!(
                    (img[r * 16 + c] - want).abs() < 1e-6,
                    "row {r} col {c}: {}",
                    img[r * 16 + c]
                );
            }
        }
        // Off-centre by half a cell across: the edge columns are half covered.
        let mut img = vec![0f32; 256];
        render_pad(
            &AREA,
            Some(&face((0.02, 0.0), 0.005, (0.0, 0.0))),
            &IM,
            &mut img,
        );
        // face y in [-5, 5] mm: columns 4..12 full (1.25 mm cells from -10 mm); z in [15, 25] mm: rows 6..10.
        let total: f32 = img.iter().sum();
        assert!((total - 2.0 * 8.0 * 4.0).abs() < 1e-4, "{total}");
        assert!(
            (img[6 * 16 + 4] - 2.0).abs() < 1e-6
                && img[6 * 16 + 3] < 1e-6
                && img[5 * 16 + 4] < 1e-6
        );
        let mut img = vec![0f32; 256];
        render_pad(
            &AREA,
            Some(&face((0.02, 0.000625), 0.005, (0.0, 0.0))),
            &IM,
            &mut img,
        );
        assert!((img[6 * 16 + 4] - 1.0).abs() < 1e-6 && (img[6 * 16 + 12] - 1.0).abs() < 1e-6);
        let total: f32 = img.iter().sum();
        assert!(
            (total - 2.0 * 8.0 * 4.0).abs() < 1e-4,
            "area is conserved: {total}"
        );
    }

    #[test]
    fn slip_loads_the_leading_edge_and_no_contact_is_zero() {
        let mut still = vec![0f32; 256];
        let mut slipping = vec![0f32; 256];
        render_pad(
            &AREA,
            Some(&face((0.02, 0.0), 0.01, (0.0, 0.0))),
            &IM,
            &mut still,
        );
        render_pad(
            &AREA,
            Some(&face((0.02, 0.0), 0.01, (0.05, 0.0))),
            &IM,
            &mut slipping,
        );
        // Moving toward +z (away from the tip): rows beyond the centre carry more, rows before less.
        let row = |img: &[f32], r: usize| -> f32 { img[r * 16..(r + 1) * 16].iter().sum() };
        assert!(row(&slipping, 11) > row(&still, 11) && row(&slipping, 4) < row(&still, 4));
        // Symmetric offsets: the shift moves load, the total stays.
        let (a, b): (f32, f32) = (still.iter().sum(), slipping.iter().sum());
        assert!((a - b).abs() < 1e-3 * a, "{a} vs {b}");
        let mut img = vec![1f32; 256];
        render_pad(&AREA, None, &IM, &mut img);
        assert!(img.iter().all(|v| *v == 0.0));
        render_pad(
            &AREA,
            Some(&FaceContact {
                pressure: 0.0,
                ..face((0.02, 0.0), 0.01, (0.0, 0.0))
            }),
            &IM,
            &mut img,
        );
        assert!(img.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn noise_is_added_and_readings_stay_non_negative() {
        let mut img = vec![0f32; 4];
        let draws = [1.0, -1.0, 0.5, -3.0];
        let mut k = 0;
        add_noise(&mut img, 0.1, || {
            k += 1;
            draws[k - 1]
        });
        assert_eq!(img, vec![0.1, 0.0, 0.05, 0.0]);
        let mut bytes = Vec::new();
        to_32fc1_bytes(&[1.5, -0.0], &mut bytes);
        assert_eq!(bytes, [0, 0, 0xc0, 0x3f, 0, 0, 0, 0x80]);
    }
}
