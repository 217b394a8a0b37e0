//! Panics on the backend's own threads, which no `catch_unwind` of ours sees.
//!
//! CubeCL runs each GPU's work on a device thread. When an allocation fails there (CUDA out of
//! memory: `can't allocate buffer of size: …`) that thread panics, CubeCL logs `Task failed`
//! and goes on; the caller's thread never hears of it and keeps computing with tensors that
//! have no memory behind them. On the first H200 run (issue 13) a batch far too large for the
//! card read back NaN losses and was reported as a diverged run, with thousands of backtraces.
//!
//! A panic hook ([`install_panic_hook`]) records every panic of the process; a
//! [`FaultWatch`] started before a piece of work reports a panic of another thread since
//! then (the out-of-memory one, when there is one), so that the work fails with the backend's own message instead of numbers
//! computed on garbage.
//!
//! Out of memory is told apart here, once: [`is_out_of_memory`] reads a backend's message,
//! [`DeviceFault::is_out_of_memory`] a fault's, and [`guarded`] runs a piece of work and returns
//! how it failed as a [`Failure`] (out of memory, a panic, or another thread's fault), from which
//! callers build their typed errors (the trainer's `TrainError::OutOfMemory`).

use std::sync::{Mutex, Once};
use std::thread::ThreadId;

/// How many distinct panic messages the log keeps (one failed allocation is followed by a
/// panic, with the same message, for every kernel that touches the lost buffer: thousands of
/// panics, a few messages).
const DISTINCT: usize = 64;

/// A panic on a thread other than the one that started the [`FaultWatch`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFault {
    /// The thread's name (CubeCL's device threads are named like `DSD-0-0`).
    pub thread: String,
    /// The panic's message.
    pub message: String,
    /// Panics of threads other than the watching one since the watch started.
    pub count: u64,
}

impl DeviceFault {
    /// The device ran out of memory (the message is an allocation failure).
    pub fn is_out_of_memory(&self) -> bool {
        is_out_of_memory(&self.message)
    }

    /// The message's first non-empty line, at most 200 characters.
    pub fn first_line(&self) -> String {
        first_line(&self.message)
    }
}

/// True for the messages CUDA/CubeCL and allocators give when memory runs out.
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out of memory")
        || m.contains("out-of-memory")
        || m.contains("outofmemory")
        || m.contains("memory allocation of")
        // CubeCL's CUDA allocator (`can't allocate buffer of size: …`), on its device thread
        || m.contains("can't allocate buffer")
}

/// A message's first non-empty line, at most 200 characters: what an error quotes of a
/// backend's (often multi-line) panic.
fn first_line(message: &str) -> String {
    message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").chars().take(200).collect()
}

/// How a piece of work run by [`guarded`] failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// An allocation failed, on this thread or the backend's: the device ran out of memory (a
    /// smaller batch may fit).
    OutOfMemory {
        /// The first line of the backend's message.
        detail: String,
    },
    /// This thread panicked, for another reason than memory.
    Panic(String),
    /// Another thread (the backend's device thread) panicked, for another reason than memory.
    Fault(DeviceFault),
}

impl Failure {
    /// The failure a panic of the working thread, with `message`, stands for.
    pub fn of_panic(message: String) -> Failure {
        if is_out_of_memory(&message) {
            Failure::OutOfMemory { detail: first_line(&message) }
        } else {
            Failure::Panic(message)
        }
    }

    /// The failure a backend thread's panic stands for.
    pub fn of_fault(fault: DeviceFault) -> Failure {
        if fault.is_out_of_memory() {
            Failure::OutOfMemory { detail: fault.first_line() }
        } else {
            Failure::Fault(fault)
        }
    }
}

/// Run `work` on this thread, catching its panic and watching the other threads: a panic of a
/// backend thread (CUDA out of memory on CubeCL's device thread) overrides whatever `work` went
/// on to compute or return (NaN losses, "diverged"); else a panic of `work` itself is the
/// failure.
pub fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, Failure> {
    let watch = FaultWatch::start();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    if let Some(fault) = watch.fault() {
        return Err(Failure::of_fault(fault));
    }
    outcome.map_err(|panic| Failure::of_panic(panic_text(&*panic)))
}

impl std::fmt::Display for DeviceFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.is_out_of_memory() { "out of memory on the device" } else { "the backend failed" };
        write!(f, "{what}: thread {} panicked ({} panic(s)): {}", self.thread, self.count, self.first_line())
    }
}

impl std::error::Error for DeviceFault {}

/// Run `work` on this thread, then fail with a panic another thread (the backend's device
/// thread) had meanwhile: its results were computed on lost buffers.
pub fn watched<T>(work: impl FnOnce() -> T) -> Result<T, DeviceFault> {
    let watch = FaultWatch::start();
    let out = work();
    match watch.fault() {
        Some(fault) => Err(fault),
        None => Ok(out),
    }
}

/// One distinct panic: a thread name and its message, with the indices of its first and latest
/// occurrence and the thread of the latest.
struct Recorded {
    first: u64,
    last: u64,
    thread: ThreadId,
    name: String,
    message: String,
}

struct PanicLog {
    /// Panics recorded since the hook was installed.
    total: u64,
    /// Panics so far per thread (to tell a watch's own panics from the others').
    per_thread: Vec<(ThreadId, u64)>,
    /// Distinct panics (at most [`DISTINCT`]).
    distinct: Vec<Recorded>,
}

impl PanicLog {
    fn of_thread(&self, thread: ThreadId) -> u64 {
        self.per_thread.iter().find(|(t, _)| *t == thread).map_or(0, |(_, n)| *n)
    }

    /// Record a panic; true when no thread of this name had panicked with this message before.
    fn record(&mut self, thread: ThreadId, name: &str, message: &str) -> bool {
        self.total += 1;
        let index = self.total;
        match self.per_thread.iter_mut().find(|(t, _)| *t == thread) {
            Some((_, n)) => *n += 1,
            None => self.per_thread.push((thread, 1)),
        }
        // (by thread name: a pool's threads, or CubeCL's device thread, repeat one message)
        if let Some(r) = self.distinct.iter_mut().find(|r| r.name == name && r.message == message) {
            r.last = index;
            r.thread = thread;
            return false;
        }
        if self.distinct.len() == DISTINCT {
            // The one seen longest ago makes room; out-of-memory ones last, they explain the rest.
            let oldest = (0..self.distinct.len())
                .min_by_key(|&i| {
                    let r = &self.distinct[i];
                    (is_out_of_memory(&r.message), r.last)
                })
                .expect("full");
            self.distinct.remove(oldest);
        }
        self.distinct.push(Recorded {
            first: index,
            last: index,
            thread,
            name: name.to_string(),
            message: message.to_string(),
        });
        true
    }
}

static LOG: Mutex<PanicLog> = Mutex::new(PanicLog { total: 0, per_thread: Vec::new(), distinct: Vec::new() });
static INSTALL: Once = Once::new();

/// The text of a panic's payload (`panic!` gives a `&str` or a `String`): the one reading of
/// it for the hook here, the trainer's `catch_unwind` and the benchmarks'.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Install the recording hook once per process, in front of the hook installed before it (which
/// still decides how a panic is printed). Install your own hook first, then this one.
///
/// Printing: out-of-memory panics are not printed (the error that reports them says it in one
/// line), and a panic is printed only the first time a thread of its name has its message
/// (CubeCL's device thread repeats one for every kernel that touches a lost buffer).
pub fn install_panic_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = panic_text(info.payload());
            let current = std::thread::current();
            let name = current.name().unwrap_or("unnamed").to_string();
            let print = {
                let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
                let new = log.record(current.id(), &name, &message);
                new && !is_out_of_memory(&message)
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
    own_before: u64,
    thread: ThreadId,
}

impl FaultWatch {
    /// Install the hook if needed and start watching, from the calling thread.
    pub fn start() -> FaultWatch {
        install_panic_hook();
        let thread = std::thread::current().id();
        let log = LOG.lock().unwrap_or_else(|e| e.into_inner());
        FaultWatch { after: log.total, own_before: log.of_thread(thread), thread }
    }

    /// A panic of another thread since the watch started: an out-of-memory one if there is
    /// one (a failed allocation is followed by panics of the work that needed the buffer, whose
    /// messages say less), else the earliest.
    pub fn fault(&self) -> Option<DeviceFault> {
        let log = LOG.lock().unwrap_or_else(|e| e.into_inner());
        let own = log.of_thread(self.thread) - self.own_before;
        let count = log.total - self.after - own;
        if count == 0 {
            return None;
        }
        let foreign: Vec<&Recorded> =
            log.distinct.iter().filter(|r| r.last > self.after && r.thread != self.thread).collect();
        let chosen = foreign
            .iter()
            .find(|r| is_out_of_memory(&r.message))
            .or_else(|| foreign.iter().min_by_key(|r| r.first));
        Some(match chosen {
            Some(r) => DeviceFault { thread: r.name.clone(), message: r.message.clone(), count },
            // (its message made room for newer ones)
            None => DeviceFault {
                thread: "unknown".into(),
                message: "a backend thread panicked; its message was not kept".into(),
                count,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_on_thread(name: &str, message: impl Into<String>) {
        let message = message.into();
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
        // As on the H200: the failed allocation, then one panic per kernel that touches the
        // lost buffer (more than the log keeps messages, were they distinct).
        for _ in 0..100 {
            panic_on_thread("DSD-0-0", "couldn't find resource for that handle: Memory page 0 doesn't exist");
        }
        let fault = watch.fault().expect("a fault");
        assert!(fault.is_out_of_memory(), "{fault:?}");
        assert_eq!(fault.thread, "DSD-0-0");
        assert_eq!(fault.count, 101);
        assert_eq!(
            fault.first_line(),
            "called `Result::unwrap()` on an `Err` value: can't allocate buffer of size: 37527470080"
        );

        assert_eq!(
            fault.to_string(),
            "out of memory on the device: thread DSD-0-0 panicked (101 panic(s)): called `Result::unwrap()` on an \
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

        // More distinct messages than the log keeps: the oldest make room, the count stays exact.
        let crowded = FaultWatch::start();
        for i in 0..DISTINCT + 5 {
            panic_on_thread("worker", format!("distinct panic {i}"));
        }
        assert!(LOG.lock().unwrap().distinct.len() <= DISTINCT);
        let fault = crowded.fault().expect("a fault");
        assert!(fault.message.starts_with("distinct panic "), "{fault:?}");
        assert_eq!(fault.count, DISTINCT as u64 + 5);
        // The failed allocation, seen before any of them, is still kept.
        assert!(LOG.lock().unwrap().distinct.iter().any(|r| r.message.contains("can't allocate buffer")));

        // `guarded`: a result, this thread's panic, or another thread's, each classified.
        assert_eq!(guarded(|| 7), Ok(7));
        assert_eq!(
            guarded(|| -> () { panic!("shape mismatch") }),
            Err(Failure::Panic("shape mismatch".into()))
        );
        assert_eq!(
            guarded(|| -> () { panic!("CUDA_ERROR_OUT_OF_MEMORY: out of memory\nCaused by: …") }),
            Err(Failure::OutOfMemory { detail: "CUDA_ERROR_OUT_OF_MEMORY: out of memory".into() })
        );
        assert_eq!(
            guarded(|| panic_on_thread("DSD-0-0", "can't allocate buffer of size: 1024")),
            Err(Failure::OutOfMemory { detail: "can't allocate buffer of size: 1024".into() })
        );
        // Another thread's panic wins over the work's own.
        assert_eq!(
            guarded(|| {
                panic_on_thread("worker", "index out of bounds");
                panic!("NaN loss")
            }),
            Err(Failure::Fault(DeviceFault {
                thread: "worker".into(),
                message: "index out of bounds".into(),
                count: 1
            }))
        );
    }
}
