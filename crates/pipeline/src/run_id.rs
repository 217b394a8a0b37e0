//! Run ids: a readable prefix of what sweeps vary and a hash of every setting.

use bertlab_run::format::{format_lr, format_number};
use bertlab_run::{setting_keys, RunOverrides};

/// The id of a run: its role and the settings sweeps vary, readable, then a hash of every
/// setting and of what the model and the data are (their [`InputIdentity`](crate::plan::InputIdentity):
/// by content where they are local files), so that changing anything (epochs, model, precision,
/// the files a reference points to) gives another directory while the same configuration always
/// gets the same one.
pub fn run_id(role: &str, model: &str, settings: &RunOverrides) -> String {
    let mut parts = vec![role.to_string()];
    if let Some(m) = settings.max_len {
        parts.push(format!("len{m}"));
    }
    if let Some(lr) = settings.lr {
        parts.push(format!("lr{}", format_lr(lr)));
    }
    if let Some(b) = settings.batch {
        parts.push(format!("b{b}"));
    }
    if let Some(s) = settings.subset {
        parts.push(format!("sub{}", format_number(s)));
    }
    let mut canonical = format!("model_ref={model}\n");
    for key in setting_keys() {
        if let Some(v) = settings.value_text(key) {
            canonical.push_str(&format!("{key}={v}\n"));
        }
    }
    let h = fnv1a64(canonical.as_bytes());
    parts.push(format!("{:08x}", (h ^ (h >> 32)) as u32));
    parts.join("-")
}

/// FNV-1a, 64 bits: stable across platforms and Rust versions (unlike `DefaultHasher`).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
