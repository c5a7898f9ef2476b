//! Where the pipeline ends: appsinks that hand each RTP packet, with the
//! time its media was captured, to a bounded channel read by the session.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

use super::{CaptureStats, RtpOut};

/// An appsink handing RTP packets of `layer` to a bounded channel. At the
/// end of the stream (a file's end) it lets go of the channel, so its
/// reader sees the end once every packet before it is read.
pub(super) fn rtp_sink(
    name: &str,
    stats: &Arc<CaptureStats>,
    live: bool,
    layer: usize,
    tx: &mpsc::Sender<RtpOut>,
) -> gst_app::AppSink {
    let tx = Arc::new(Mutex::new(Some(tx.clone())));
    let at_end = tx.clone();
    let sink = gst_app::AppSink::builder()
        .name(name)
        .caps(&gst::Caps::builder("application/x-rtp").build())
        // Live sources are already paced, and waiting on the clock here
        // would only add latency; a file is paced here, in real time.
        .sync(!live)
        .build();
    let stats = stats.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(map) = buffer.map_readable() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let data = Bytes::copy_from_slice(map.as_slice());
                stats.packets.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                let captured = capture_time(sink, &sample, buffer);
                let tx = tx.lock().unwrap_or_else(|e| e.into_inner());
                let Some(tx) = tx.as_ref() else {
                    return Err(gst::FlowError::Eos);
                };
                match tx.try_send(RtpOut {
                    data,
                    captured,
                    layer,
                }) {
                    Ok(()) => Ok(gst::FlowSuccess::Ok),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        Ok(gst::FlowSuccess::Ok)
                    }
                    // Nobody reads any more: the session is ending.
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(gst::FlowError::Eos),
                }
            })
            .eos(move |_| {
                at_end.lock().unwrap_or_else(|e| e.into_inner()).take();
            })
            .build(),
    );
    sink
}

/// When the media in `buffer` was captured, on the wall clock: its running
/// time is when the source stamped it, and the pipeline clock tells how
/// long ago that was.
fn capture_time(
    sink: &gst_app::AppSink,
    sample: &gst::Sample,
    buffer: &gst::BufferRef,
) -> Option<SystemTime> {
    let clock = sink.clock()?;
    let base = sink.base_time()?;
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    let running = segment.to_running_time(buffer.pts()?)?;
    let age = clock.time().saturating_sub(base + running);
    SystemTime::now().checked_sub(Duration::from_nanos(age.nseconds()))
}
