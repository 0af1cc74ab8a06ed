//! Continuous `--push` while recording: every interval, the window's
//! samples are symbolized, folded and handed to an upload thread, while
//! sampling goes on. The graph written at the end still shows the whole
//! recording, merged from every window.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use collapse::{CollapseStats, Collapsed, Collapser, Event, EventSink, SymbolizerOptions};
use export::{PprofOptions, SampleUnit, UploadLimits};
use folded::FoldedStacks;

use crate::exports::unix_now_ns;
use crate::push::{self, Target, Window};

/// A window ready to upload.
struct WindowUpload {
    window: Window,
    parts: Vec<Vec<u8>>,
}

/// The event sink of a recording with `--push`: passes events to the
/// collapser and cuts a window every `interval`.
pub struct WindowedPush<'a> {
    collapser: &'a mut Collapser,
    symbolizer: SymbolizerOptions,
    interval: Duration,
    unit: SampleUnit,
    weights_are_periods: bool,
    sample_rate: u64,
    window_started: Instant,
    window_start_ns: i64,
    uploads: Option<mpsc::Sender<WindowUpload>>,
    uploader: Option<JoinHandle<()>>,
    failed: Arc<AtomicU32>,
    windows: u32,
    /// Everything so far, for the final graph.
    total: FoldedStacks,
    stats: CollapseStats,
    perf_maps: Vec<(i32, Vec<u8>)>,
    /// Ask sampled JVMs for their perf maps before each window is symbolized.
    jvm_attach: bool,
    quiet: bool,
}

/// How windows are cut and made.
pub struct WindowOptions {
    /// Length of a window.
    pub interval: Duration,
    /// What a sample stands for.
    pub unit: SampleUnit,
    /// The folded weights are period sums.
    pub weights_are_periods: bool,
    /// Ask sampled JVMs for their perf maps before each window.
    pub jvm_attach: bool,
    /// No messages for successful uploads.
    pub quiet: bool,
}

/// What the recording gave, once every window is cut.
pub struct Finished {
    pub stacks: FoldedStacks,
    pub stats: CollapseStats,
    pub perf_maps: Vec<(i32, Vec<u8>)>,
    /// Windows that were not uploaded.
    pub failed: u32,
}

impl<'a> WindowedPush<'a> {
    /// Starts the first window now and the upload thread.
    pub fn new(
        collapser: &'a mut Collapser,
        symbolizer: SymbolizerOptions,
        target: Target,
        options: WindowOptions,
    ) -> WindowedPush<'a> {
        let WindowOptions {
            interval,
            unit,
            weights_are_periods,
            jvm_attach,
            quiet,
        } = options;
        let (sender, receiver) = mpsc::channel::<WindowUpload>();
        let failed = Arc::new(AtomicU32::new(0));
        let failures = failed.clone();
        let uploader = std::thread::spawn(move || {
            for upload in receiver {
                if let Err(error) = push::upload(&target, &upload.window, &upload.parts, quiet) {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "flamegraph-perf: warning: window {}..{} not uploaded: {error:#}",
                        upload.window.start_ns / 1_000_000_000,
                        upload.window.end_ns / 1_000_000_000
                    );
                }
            }
        });
        let sample_rate = unit.sample_rate_hz();
        WindowedPush {
            collapser,
            symbolizer,
            interval,
            unit,
            weights_are_periods,
            sample_rate,
            window_started: Instant::now(),
            window_start_ns: unix_now_ns(),
            uploads: Some(sender),
            uploader: Some(uploader),
            failed,
            windows: 0,
            total: FoldedStacks::new(),
            stats: CollapseStats::default(),
            perf_maps: Vec::new(),
            jvm_attach,
            quiet,
        }
    }

    /// Cuts the current window: symbolizes and folds it, adds it to the
    /// total and queues its upload.
    fn cut(&mut self) {
        let end_ns = unix_now_ns();
        if self.jvm_attach {
            // JIT code gets names only from a current perf map.
            crate::jvm::dump_perf_maps(&self.collapser.sampled_pids(), true);
        }
        let Collapsed {
            stacks,
            stats,
            perf_maps,
            addresses,
        } = self.collapser.finish_window(self.symbolizer.clone());
        let window = Window {
            start_ns: self.window_start_ns,
            end_ns,
            sample_rate: self.sample_rate,
        };
        self.window_started = Instant::now();
        self.window_start_ns = end_ns;
        self.total.add_all(&stacks);
        self.stats.add(&stats);
        if !perf_maps.is_empty() {
            self.perf_maps = perf_maps;
        }
        let Some(addresses) = addresses.filter(|a| !a.samples.is_empty()) else {
            return;
        };
        self.windows += 1;
        let options = PprofOptions {
            unit: self.unit,
            weights_are_periods: self.weights_are_periods,
            time_nanos: window.start_ns,
            duration_nanos: window.end_ns - window.start_ns,
        };
        match export::upload_parts(&addresses, &stacks, &options, UploadLimits::default()) {
            Ok(parts) => {
                if let Some(uploads) = &self.uploads {
                    let _ = uploads.send(WindowUpload { window, parts });
                }
            }
            Err(error) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("flamegraph-perf: warning: window not encoded: {error}");
            }
        }
    }

    /// Cuts the last window, waits for the uploads to end (each is bounded
    /// by its retries) and returns the whole recording.
    pub fn finish(mut self) -> Result<Finished> {
        self.cut();
        drop(self.uploads.take());
        if let Some(uploader) = self.uploader.take() {
            let _ = uploader.join();
        }
        if !self.quiet {
            eprintln!(
                "flamegraph-perf: {} window{} pushed, {} failed",
                self.windows,
                if self.windows == 1 { "" } else { "s" },
                self.failed.load(Ordering::Relaxed)
            );
        }
        Ok(Finished {
            stacks: std::mem::take(&mut self.total),
            stats: std::mem::take(&mut self.stats),
            perf_maps: std::mem::take(&mut self.perf_maps),
            failed: self.failed.load(Ordering::Relaxed),
        })
    }
}

impl EventSink for WindowedPush<'_> {
    fn event(&mut self, event: &Event<'_>) {
        self.collapser.event(event);
        if self.window_started.elapsed() >= self.interval {
            self.cut();
        }
    }
}
