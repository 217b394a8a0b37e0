//! Panics on the backend's own threads, which no `catch_unwind` of ours sees.
//!
//! CubeCL runs each GPU's work on a device thread. When an allocation fails there (CUDA out of
//! memory: `can't allocate buffer of size: …`) that thread panics, CubeCL logs `Task failed`
//! and goes on; the caller's thread never hears of it and keeps computing with tensors that
//! have no memory behind them. On the first H200 run (issue 13) a batch far too large for the
//! card read back NaN losses and was reported as a diverged run, with thousands of backtraces.
//!
//! A panic hook ([`install_panic_hook`]) records every panic of the process; a
//! [`FaultWatch`] started before a piece of work reports the first panic of another thread
//! since then, so that the work fails with the backend's own message instead of numbers
//! computed on garbage.

use std::panic::PanicHookInfo;
use std::sync::{Mutex, Once};
use std::thread::ThreadId;

/// How many panic messages the log keeps, and how many of other threads' panics are printed:
/// one failed allocation is followed by a panic for every kernel that touches the lost buffer.
const KEPT: usize = 16;
const PRINTED: u64 = 3;

/// A panic on a thread other than the one that started the [`FaultWatch`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFault {
    /// The thread's name (CubeCL's device threads are named like `DSD-0-0`).
    pub thread: String,
    /// The panic's message.
    pub message: String,
    /// Panics of other threads since the watch started, this one included.
    pub count: u64,
}

impl DeviceFault {
    /// The device ran out of memory (the message is an allocation failure).
    pub fn is_out_of_memory(&self) -> bool {
        crate::trainer::is_out_of_memory(&self.message)
    }

    /// The message's first non-empty line, at most 200 characters.
    pub fn first_line(&self) -> String {
        self.message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").chars().take(200).collect()
    }
}

impl std::fmt::Display for DeviceFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.is_out_of_memory() { "out of memory on the device" } else { "the backend failed" };
        write!(f, "{what}: thread {} panicked ({} panic(s)): {}", self.thread, self.count, self.first_line())
    }
}

impl std::error::Error for DeviceFault {}

/// Run `work` on this thread, then fail with the first panic another thread (the backend's
/// device thread) had meanwhile: its results were computed on lost buffers.
pub fn watched<T>(work: impl FnOnce() -> T) -> Result<T, DeviceFault> {
    let watch = FaultWatch::start();
    let out = work();
    match watch.fault() {
        Some(fault) => Err(fault),
        None => Ok(out),
    }
}

struct Recorded {
    index: u64,
    thread: ThreadId,
    name: String,
    message: String,
}

#[derive(Default)]
struct PanicLog {
    /// Panics recorded since the hook was installed.
    total: u64,
    /// Panics of threads not named `main` that were not out of memory (printing is capped).
    foreign_printed: u64,
    /// The most recent panics (at most [`KEPT`]).
    kept: Vec<Recorded>,
}

static LOG: Mutex<PanicLog> = Mutex::new(PanicLog { total: 0, foreign_printed: 0, kept: Vec::new() });
static INSTALL: Once = Once::new();

fn payload_text(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Install the recording hook once per process, in front of the hook installed before it (which
/// still decides how a panic is printed). Install your own hook first, then this one.
///
/// Printing: out-of-memory panics are not printed (the error that reports them says it in one
/// line); of the other panics on threads that are not `main`, the first three are printed
/// and the rest only counted.
pub fn install_panic_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = payload_text(info);
            let current = std::thread::current();
            let name = current.name().unwrap_or("unnamed").to_string();
            let print = {
                let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
                log.total += 1;
                let index = log.total;
                if log.kept.len() == KEPT {
                    log.kept.remove(0);
                }
                log.kept.push(Recorded {
                    index,
                    thread: current.id(),
                    name: name.clone(),
                    message: message.clone(),
                });
                if crate::trainer::is_out_of_memory(&message) {
                    false
                } else if name != "main" {
                    log.foreign_printed += 1;
                    log.foreign_printed <= PRINTED
                } else {
                    true
                }
            };
            if print {
                previous(info);
            }
        }));
    });
}

/// Watches for panics of other threads from the moment it is started.
#[derive(Debug, Clone)]
pub struct FaultWatch {
    after: u64,
    thread: ThreadId,
}

impl FaultWatch {
    /// Install the hook if needed and start watching, from the calling thread.
    pub fn start() -> FaultWatch {
        install_panic_hook();
        let after = LOG.lock().unwrap_or_else(|e| e.into_inner()).total;
        FaultWatch { after, thread: std::thread::current().id() }
    }

    /// The first panic of another thread since the watch started: its out-of-memory one if
    /// any of the kept panics is one (a failed allocation is followed by panics of the work
    /// that needed it, whose messages say less), else the first.
    pub fn fault(&self) -> Option<DeviceFault> {
        let log = LOG.lock().unwrap_or_else(|e| e.into_inner());
        let foreign: Vec<&Recorded> =
            log.kept.iter().filter(|r| r.index > self.after && r.thread != self.thread).collect();
        let count = foreign.len() as u64;
        let chosen = foreign
            .iter()
            .find(|r| crate::trainer::is_out_of_memory(&r.message))
            .or_else(|| foreign.first())?;
        Some(DeviceFault { thread: chosen.name.clone(), message: chosen.message.clone(), count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_on_thread(name: &str, message: &'static str) {
        let handle =
            std::thread::Builder::new().name(name.into()).spawn(move || panic!("{message}")).unwrap();
        assert!(handle.join().is_err());
    }

    // (one test: the log is global to the process)
    #[test]
    fn a_watch_reports_other_threads_panics_since_it_started_preferring_out_of_memory() {
        panic_on_thread("DSD-0-0", "before the watch");
        let watch = FaultWatch::start();
        assert_eq!(watch.fault(), None);
        // Panics of the watching thread are its own to catch.
        assert!(std::panic::catch_unwind(|| panic!("mine")).is_err());
        assert_eq!(watch.fault(), None);

        panic_on_thread(
            "DSD-0-0",
            "called `Result::unwrap()` on an `Err` value: can't allocate buffer of size: 37527470080",
        );
        panic_on_thread("DSD-0-0", "couldn't find resource for that handle: Memory page 0 doesn't exist");
        let fault = watch.fault().expect("a fault");
        assert!(fault.is_out_of_memory(), "{fault:?}");
        assert_eq!(fault.thread, "DSD-0-0");
        assert_eq!(fault.count, 2);
        assert_eq!(
            fault.first_line(),
            "called `Result::unwrap()` on an `Err` value: can't allocate buffer of size: 37527470080"
        );

        assert_eq!(
            fault.to_string(),
            "out of memory on the device: thread DSD-0-0 panicked (2 panic(s)): called `Result::unwrap()` on an \
             `Err` value: can't allocate buffer of size: 37527470080"
        );
        assert_eq!(watched(|| 7), Ok(7));
        assert!(watched(|| panic_on_thread("DSD-0-0", "boom")).is_err_and(|f| f.message == "boom"));

        let later = FaultWatch::start();
        assert_eq!(later.fault(), None);
        panic_on_thread("worker", "index out of bounds");
        let fault = later.fault().expect("a fault");
        assert!(!fault.is_out_of_memory());
        assert_eq!((fault.message.as_str(), fault.count), ("index out of bounds", 1));
    }
}
