//! Conversions between 8-bit RGB images and `[1, 3, H, W]` tensors of scaled pixel values, for
//! networks that take and return pixels (EDSR super-resolution) rather than normalised input.

use crate::ImageError;
use image::{Rgb, RgbImage};
use resnet_tensor::{Layout, Tensor};

/// The scale must be finite and non-zero: the way back divides by it.
fn check_scale(scale: f32) -> Result<(), ImageError> {
    if scale.is_finite() && scale != 0.0 {
        Ok(())
    } else {
        Err(ImageError::Invalid(format!(
            "the pixel scale must be finite and non-zero, got {scale}"
        )))
    }
}

/// An 8-bit RGB image as a `[1, 3, H, W]` NCHW tensor holding each channel value times `scale`
/// (`rgb_range / 255` for an EDSR network: `1.0` for pixels in `0..=255`, `1.0 / 255.0` for
/// `[0, 1]`).
///
/// # Errors
/// [`ImageError::Invalid`] for an image without pixels or a `scale` that is not finite and
/// non-zero; [`ImageError::Tensor`] when the tensor cannot be allocated.
///
/// ```
/// use resnet_image::rgb_to_tensor;
///
/// let img = image::RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8, y as u8, 255]));
/// let t = rgb_to_tensor(&img, 0.5)?;
/// assert_eq!(t.shape().dims(), &[1, 3, 2, 4]);
/// // Channel planes of rows: the red of the pixel at x = 3, y = 1, then its blue.
/// assert_eq!(t.as_slice()[4 + 3], 1.5);
/// assert_eq!(t.as_slice()[2 * 8 + 4 + 3], 127.5);
/// # Ok::<(), resnet_image::ImageError>(())
/// ```
pub fn rgb_to_tensor(img: &RgbImage, scale: f32) -> Result<Tensor, ImageError> {
    check_scale(scale)?;
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError::Invalid("the image has no pixels".into()));
    }
    let (w, h) = (w as usize, h as usize);
    let plane = w * h;
    let mut t = Tensor::try_zeros_with_layout(&[1, 3, h, w], Layout::Nchw)?;
    let data = t.as_mut_slice();
    for (i, p) in img.pixels().enumerate() {
        for (c, &v) in p.0.iter().enumerate() {
            data[c * plane + i] = f32::from(v) * scale;
        }
    }
    Ok(t)
}

/// A `[1, 3, H, W]` tensor (NCHW or NHWC) as an 8-bit RGB image: each value divided by `scale`,
/// rounded half away from zero and clamped to `0..=255` (NaN becomes 0). The inverse of
/// [`rgb_to_tensor`] with the same `scale`.
///
/// # Errors
/// [`ImageError::NotRgbTensor`] for any other shape, including an empty image or a side over
/// `u32::MAX`; [`ImageError::Invalid`] for a `scale` that is not finite and non-zero.
///
/// ```
/// use resnet_image::tensor_to_rgb;
/// use resnet_tensor::Tensor;
///
/// // One row of two pixels (red, then green, then blue plane), values in 0..=255.
/// let t = Tensor::from_vec(&[1, 3, 1, 2], vec![127.5, 510.0, -25.5, 63.75, 255.0, 0.2])?;
/// let img = tensor_to_rgb(&t, 1.0)?;
/// assert_eq!(img.dimensions(), (2, 1));
/// assert_eq!(img.get_pixel(0, 0).0, [128, 0, 255]); // 127.5 rounds up, -25.5 clamps to 0
/// assert_eq!(img.get_pixel(1, 0).0, [255, 64, 0]); // 510 clamps to 255, 63.75 rounds to 64
/// assert!(tensor_to_rgb(&Tensor::zeros(&[1, 4, 1, 2])?, 1.0).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tensor_to_rgb(t: &Tensor, scale: f32) -> Result<RgbImage, ImageError> {
    check_scale(scale)?;
    let dims = t.shape().dims();
    let not_rgb = || ImageError::NotRgbTensor {
        dims: dims.to_vec(),
    };
    let &[1, 3, h, w] = dims else {
        return Err(not_rgb());
    };
    let (Ok(w32), Ok(h32)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err(not_rgb());
    };
    if w == 0 || h == 0 {
        return Err(not_rgb());
    }
    let [_, sc, sh, sw] = t.layout().strides([1, 3, h, w]);
    let data = t.as_slice();
    Ok(RgbImage::from_fn(w32, h32, |x, y| {
        let at = y as usize * sh + x as usize * sw;
        Rgb(std::array::from_fn(|c| {
            (data[c * sc + at] / scale).round().clamp(0.0, 255.0) as u8
        }))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RgbImage {
        RgbImage::from_fn(5, 3, |x, y| {
            Rgb([(x * 50) as u8, (y * 100 + 3) as u8, (x * 7 + y * 80) as u8])
        })
    }

    #[test]
    fn pixels_land_in_channel_planes() {
        let img = sample();
        let t = rgb_to_tensor(&img, 2.0).unwrap();
        assert_eq!(t.shape().dims(), &[1, 3, 3, 5]);
        assert_eq!(t.layout(), Layout::Nchw);
        let d = t.as_slice();
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                let i = c * 15 + y as usize * 5 + x as usize;
                assert_eq!(d[i], f32::from(p.0[c]) * 2.0, "({x}, {y}) channel {c}");
            }
        }
    }

    #[test]
    fn round_trips_at_every_scale() {
        let img = sample();
        for scale in [1.0, 1.0 / 255.0, 255.0 / 255.0, 0.3, -1.0] {
            let t = rgb_to_tensor(&img, scale).unwrap();
            assert_eq!(tensor_to_rgb(&t, scale).unwrap(), img, "scale {scale}");
        }
    }

    #[test]
    fn values_are_rounded_then_clamped() {
        let vals = [
            -3.0,
            -0.4,
            0.49,
            0.5,
            1.5,
            2.5,
            254.5,
            255.4,
            256.0,
            1e9,
            f32::NAN,
            -0.0,
        ];
        let want = [0u8, 0, 0, 1, 2, 3, 255, 255, 255, 255, 0, 0];
        let mut data = vec![0.0; 3 * vals.len()];
        data[..vals.len()].copy_from_slice(&vals);
        let t = Tensor::from_vec(&[1, 3, 1, vals.len()], data).unwrap();
        let img = tensor_to_rgb(&t, 1.0).unwrap();
        let red: Vec<u8> = img.pixels().map(|p| p.0[0]).collect();
        assert_eq!(red, want);
        // The scale divides before rounding.
        let t = Tensor::from_vec(&[1, 3, 1, 1], vec![0.5, 0.25, 0.998]).unwrap();
        assert_eq!(tensor_to_rgb(&t, 0.5).unwrap().get_pixel(0, 0).0, [1, 1, 2]);
    }

    #[test]
    fn nhwc_tensors_give_the_same_image() {
        let t = rgb_to_tensor(&sample(), 1.0).unwrap();
        let nhwc = t.to_layout(Layout::Nhwc).unwrap();
        assert_eq!(tensor_to_rgb(&nhwc, 1.0).unwrap(), sample());
    }

    #[test]
    fn other_shapes_are_typed_errors() {
        for dims in [
            &[1, 3, 2][..],
            &[2, 3, 2, 2],
            &[1, 1, 2, 2],
            &[1, 4, 2, 2],
            &[1, 3, 0, 2],
            &[1, 3, 2, 0],
            &[1, 3, 1, 1, 1],
        ] {
            let t = Tensor::zeros(dims).unwrap();
            match tensor_to_rgb(&t, 1.0) {
                Err(ImageError::NotRgbTensor { dims: d }) => assert_eq!(d, dims),
                other => panic!("{dims:?}: {other:?}"),
            }
        }
        let e = tensor_to_rgb(&Tensor::zeros(&[1, 4, 2, 2]).unwrap(), 1.0).unwrap_err();
        assert!(e.to_string().contains("[1, 4, 2, 2]"), "{e}");
    }

    #[test]
    fn bad_scales_and_empty_images_are_errors() {
        let t = Tensor::zeros(&[1, 3, 1, 1]).unwrap();
        for scale in [0.0, -0.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                tensor_to_rgb(&t, scale),
                Err(ImageError::Invalid(_))
            ));
            assert!(matches!(
                rgb_to_tensor(&sample(), scale),
                Err(ImageError::Invalid(_))
            ));
        }
        assert!(matches!(
            rgb_to_tensor(&RgbImage::new(0, 4), 1.0),
            Err(ImageError::Invalid(_))
        ));
    }
}
