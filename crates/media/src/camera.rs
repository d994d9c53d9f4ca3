//! Cameras through nokhwa (V4L2 on Linux), delivered as I420 frames. The
//! camera lives on a capture thread of its own until the handle is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use tracing::{debug, warn};

use crate::devices::{spawn_device_thread, DeviceError, DeviceKind};
use crate::{unix_micros, VideoFrame};

/// What to ask a camera for; it gives the closest it supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraSettings {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl Default for CameraSettings {
    fn default() -> Self {
        CameraSettings {
            width: 640,
            height: 480,
            fps: 30,
        }
    }
}

/// The nokhwa index for a device id (a number, or a device path).
pub(crate) fn camera_index(id: &str) -> CameraIndex {
    match id.parse::<u32>() {
        Ok(n) => CameraIndex::Index(n),
        Err(_) => CameraIndex::String(id.to_owned()),
    }
}

/// An open camera. Dropping it stops capture and releases the device.
pub struct Camera {
    id: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Camera {
    /// Opens camera `id` (or the first one) and calls `on_frame` with each
    /// captured frame, `on_error` once if it stops working (unplugged).
    pub fn open(
        id: Option<&str>,
        settings: CameraSettings,
        mut on_frame: impl FnMut(VideoFrame) + Send + 'static,
        mut on_error: impl FnMut(DeviceError) + Send + 'static,
    ) -> Result<Self, DeviceError> {
        let kind = DeviceKind::Camera;
        let id = match id {
            Some(id) => id.to_owned(),
            None => crate::devices::list(kind)
                .into_iter()
                .next()
                .map(|d| d.id)
                .ok_or(DeviceError::NoDevice(kind))?,
        };
        if !crate::devices::list(kind).iter().any(|d| d.id == id) {
            return Err(DeviceError::NotFound { kind, id });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_stop, thread_id) = (stop.clone(), id.clone());
        let thread = spawn_device_thread(kind, &id, move |ready| {
            let requested =
                RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(CameraFormat::new(
                    Resolution::new(settings.width, settings.height),
                    FrameFormat::YUYV,
                    settings.fps,
                )));
            let opened = nokhwa::Camera::new(camera_index(&thread_id), requested)
                .and_then(|mut c| c.open_stream().map(|_| c));
            let mut camera = match opened {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready.send(Err(DeviceError::Open {
                        kind,
                        id: thread_id.clone(),
                        message: e.to_string(),
                    }));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            while !thread_stop.load(Ordering::SeqCst) {
                let frame = camera
                    .frame()
                    .map_err(|e| e.to_string())
                    .and_then(|b| to_i420(&b).ok_or_else(|| "unreadable frame".to_owned()));
                match frame {
                    Ok(f) => on_frame(f),
                    Err(message) => {
                        warn!(camera = %thread_id, %message, "camera lost");
                        crate::devices::note_lost();
                        on_error(DeviceError::Lost {
                            kind,
                            id: thread_id.clone(),
                            message,
                        });
                        break;
                    }
                }
            }
            let _ = camera.stop_stream();
            debug!(camera = %thread_id, "closed");
        })?;
        Ok(Camera {
            id,
            stop,
            thread: Some(thread),
        })
    }

    /// The camera's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn to_i420(buffer: &nokhwa::Buffer) -> Option<VideoFrame> {
    let res = buffer.resolution();
    let (w, h) = (res.width() as usize, res.height() as usize);
    let data = buffer.buffer();
    let mut frame = match buffer.source_frame_format() {
        FrameFormat::YUYV => yuyv_to_i420(data, w, h)?,
        FrameFormat::NV12 => nv12_to_i420(data, w, h)?,
        _ => {
            let rgb = buffer.decode_image::<RgbFormat>().ok()?;
            rgb_to_i420(rgb.as_raw(), w, h)?
        }
    };
    frame.captured_us = unix_micros();
    Some(frame)
}

/// Even dimensions (I420 needs them): odd edges are cropped.
fn even(w: usize, h: usize) -> (usize, usize) {
    (w & !1, h & !1)
}

/// Packed YUYV 4:2:2 to I420 (chroma of each row pair averaged).
pub fn yuyv_to_i420(src: &[u8], width: usize, height: usize) -> Option<VideoFrame> {
    let (w, h) = even(width, height);
    if src.len() < width * height * 2 {
        return None;
    }
    let mut f = VideoFrame::black(w, h).ok()?;
    let (y, u, v) = f.planes_mut();
    for row in 0..h {
        let line = &src[row * width * 2..];
        for col in 0..w {
            y[row * w + col] = line[col * 2];
        }
    }
    for row in (0..h).step_by(2) {
        let (a, b) = (&src[row * width * 2..], &src[(row + 1) * width * 2..]);
        for col in (0..w).step_by(2) {
            let i = col * 2;
            let ci = (row / 2) * (w / 2) + col / 2;
            u[ci] = ((u16::from(a[i + 1]) + u16::from(b[i + 1])) / 2) as u8;
            v[ci] = ((u16::from(a[i + 3]) + u16::from(b[i + 3])) / 2) as u8;
        }
    }
    Some(f)
}

/// NV12 (Y plane, interleaved UV plane) to I420.
pub fn nv12_to_i420(src: &[u8], width: usize, height: usize) -> Option<VideoFrame> {
    let (w, h) = even(width, height);
    if src.len() < width * height * 3 / 2 {
        return None;
    }
    let mut f = VideoFrame::black(w, h).ok()?;
    let (y, u, v) = f.planes_mut();
    for row in 0..h {
        y[row * w..row * w + w].copy_from_slice(&src[row * width..row * width + w]);
    }
    let chroma = &src[width * height..];
    for row in 0..h / 2 {
        for col in 0..w / 2 {
            let s = row * width + col * 2;
            u[row * (w / 2) + col] = chroma[s];
            v[row * (w / 2) + col] = chroma[s + 1];
        }
    }
    Some(f)
}

/// Packed RGB24 to I420 (BT.601, limited range).
pub fn rgb_to_i420(src: &[u8], width: usize, height: usize) -> Option<VideoFrame> {
    let (w, h) = even(width, height);
    if src.len() < width * height * 3 {
        return None;
    }
    let mut f = VideoFrame::black(w, h).ok()?;
    let (y, u, v) = f.planes_mut();
    let px = |row: usize, col: usize| {
        let i = (row * width + col) * 3;
        (
            i32::from(src[i]),
            i32::from(src[i + 1]),
            i32::from(src[i + 2]),
        )
    };
    for row in 0..h {
        for col in 0..w {
            let (r, g, b) = px(row, col);
            y[row * w + col] = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16).clamp(0, 255) as u8;
        }
    }
    for row in (0..h).step_by(2) {
        for col in (0..w).step_by(2) {
            let (mut r, mut g, mut b) = (0, 0, 0);
            for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let p = px(row + dr, col + dc);
                r += p.0;
                g += p.1;
                b += p.2;
            }
            let (r, g, b) = (r / 4, g / 4, b / 4);
            let ci = (row / 2) * (w / 2) + col / 2;
            u[ci] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128).clamp(0, 255) as u8;
            v[ci] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128).clamp(0, 255) as u8;
        }
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_and_nv12_keep_luma_and_chroma() {
        // 4×2 YUYV: Y ramps, U=90, V=200.
        let yuyv = [
            10, 90, 20, 200, 30, 90, 40, 200, 50, 90, 60, 200, 70, 90, 80, 200,
        ];
        let f = yuyv_to_i420(&yuyv, 4, 2).unwrap();
        assert_eq!(f.y(), &[10, 20, 30, 40, 50, 60, 70, 80]);
        assert_eq!((f.u(), f.v()), (&[90, 90][..], &[200, 200][..]));
        let nv12 = [1, 2, 3, 4, 5, 6, 7, 8, 90, 200, 91, 201];
        let f = nv12_to_i420(&nv12, 4, 2).unwrap();
        assert_eq!(f.y(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!((f.u(), f.v()), (&[90, 91][..], &[200, 201][..]));
        assert!(yuyv_to_i420(&yuyv[..10], 4, 2).is_none(), "short buffer");
    }

    #[test]
    fn rgb_white_black_red() {
        let mut rgb = vec![255u8; 2 * 2 * 3];
        let f = rgb_to_i420(&rgb, 2, 2).unwrap();
        assert_eq!((f.y()[0], f.u()[0], f.v()[0]), (235, 128, 128));
        rgb.fill(0);
        assert_eq!(rgb_to_i420(&rgb, 2, 2).unwrap().y()[0], 16);
        for p in rgb.chunks_mut(3) {
            p[0] = 255;
        }
        let red = rgb_to_i420(&rgb, 2, 2).unwrap();
        assert!(red.v()[0] > 230 && red.u()[0] < 110);
        // Odd sizes are cropped to even.
        let f = rgb_to_i420(&[0u8; 3 * 3 * 3], 3, 3).unwrap();
        assert_eq!((f.width, f.height), (2, 2));
    }
}
