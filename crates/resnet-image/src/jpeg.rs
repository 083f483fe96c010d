//! JPEG decoding with libjpeg-turbo's algorithms (the `libjpeg` feature).
//!
//! PIL, and so torchvision, decodes JPEGs with libjpeg-turbo: its integer IDCT ("islow"), its
//! triangular ("fancy") chroma upsampling and its fixed-point YCbCr → RGB tables. MozJPEG's
//! decoder is libjpeg-turbo's, so decoding through it gives the same pixels bit for bit; a
//! different IDCT (the `image` crate's) lands a level or two off on some pixels.

use image::error::{DecodingError, ImageFormatHint};
use image::{ImageFormat, RgbImage};
use std::cell::Cell;
use std::io::{BufRead, Read};
use std::rc::Rc;

/// The file's bytes as libjpeg's input, noting whether libjpeg asked for more after the last
/// one. On running out of data libjpeg only warns (MozJPEG silences warnings), pads the rest of
/// the image with grey and reports success; a JPEG cut short would decode "fine". PIL refuses
/// such a file ("image file is truncated"), and so does [`decode_rgb`], through this flag.
struct WatchEnd<'a> {
    rest: &'a [u8],
    ran_out: Rc<Cell<bool>>,
}

impl Read for WatchEnd<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.rest.len().min(buf.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for WatchEnd<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.rest.is_empty() {
            self.ran_out.set(true);
        }
        Ok(self.rest)
    }

    fn consume(&mut self, amt: usize) {
        self.rest = &self.rest[amt.min(self.rest.len())..];
    }
}

/// Decode a JPEG to 8-bit RGB as PIL's `Image.open(..).convert("RGB")` does, or `None` when
/// libjpeg cannot give RGB for it (CMYK and YCCK files), so that the caller falls back to the
/// `image` crate. `expect` is the size the caller read from the header and checked against
/// the decoded-size limit. A file whose data runs out before libjpeg has read every row (and
/// with it the end-of-image marker: libjpeg reads ahead, so a file missing only that marker
/// runs out too) is an error, as a truncated file is in PIL.
pub(crate) fn decode_rgb(
    bytes: &[u8],
    expect: (u32, u32),
) -> Option<Result<RgbImage, image::ImageError>> {
    // libjpeg reports fatal errors by unwinding out of the decoder (MozJPEG's error manager
    // resumes a panic payload without running the panic hook); catch it here and make it an
    // error value.
    let size = (expect.0 as usize, expect.1 as usize);
    let run = std::panic::catch_unwind(|| -> std::io::Result<Option<(usize, usize, Vec<u8>)>> {
        let ran_out = Rc::new(Cell::new(false));
        let d = mozjpeg::Decompress::new_reader(WatchEnd {
            rest: bytes,
            ran_out: Rc::clone(&ran_out),
        })?;
        // Nothing is allocated for pixels before this check: libjpeg must see the size the
        // caller checked against the limit.
        if d.size() != size {
            return Ok(Some((d.width(), d.height(), Vec::new())));
        }
        if matches!(
            d.color_space(),
            mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK
        ) {
            return Ok(None);
        }
        // libjpeg's defaults are PIL's: the islow IDCT and fancy upsampling.
        let mut started = d.rgb()?;
        let (w, h) = (started.width(), started.height());
        let pixels = started.read_scanlines::<u8>()?;
        if ran_out.get() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "truncated JPEG: the data ends before the end-of-image marker",
            ));
        }
        started.finish()?;
        Ok(Some((w, h, pixels)))
    });
    let fail = |msg: String| {
        Some(Err(image::ImageError::Decoding(DecodingError::new(
            ImageFormatHint::Exact(ImageFormat::Jpeg),
            msg,
        ))))
    };
    match run {
        Ok(Ok(None)) => None,
        Ok(Ok(Some((w, h, pixels)))) => {
            if (w, h) != size {
                return fail(format!(
                    "libjpeg decoded {w}x{h} pixels where the header says {}x{}",
                    expect.0, expect.1
                ));
            }
            match RgbImage::from_raw(expect.0, expect.1, pixels) {
                Some(img) => Some(Ok(img)),
                None => fail("libjpeg returned fewer pixels than the image has".into()),
            }
        }
        Ok(Err(e)) => fail(format!("libjpeg: {e}")),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg failed".into());
            fail(msg)
        }
    }
}
