//! How an error names a setting. The libraries are driven by `bertlab` flags, by run specs
//! (`run.toml`), by pipeline files (`cargo xtask`) and by other programs, so an error stores
//! *which* setting is at fault ([`Setting`]) and its value, and says it in one of two styles
//! ([`SettingStyle`]): as a run-spec key (`batch = 32`), which is what its `Display` (and so
//! `failed-record.json`'s `error`) shows, or as a flag (`--batch 32`), which is what the
//! `bertlab` binary prints ([`NamesSettings::render`]).

use std::fmt::Display;

/// A flag whose value cannot be used, alone or with the others given (`--batch 0`,
/// `--precision f16` where f32 is needed beside it): what `bertlab` exits 2 for, as for clap's
/// own usage errors. Libraries that parse their own flags (the benches) return it so that the
/// binary can tell a user's mistake from a failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A setting an error may name: a key of a run spec ([`ALL_KEYS`](crate::ALL_KEYS); the
/// constants named after the keys, and [`Setting::of_key`], are declared with the keys, in
/// spec.rs) or one of the [`SWITCHES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Setting(&'static str);

/// Settings that are not keys of a run spec but options of a training call (`TrainOptions`'s
/// `fresh` and `overwrite`; `bertlab train --fresh`, `--overwrite`).
pub const SWITCHES: &[&str] = &["fresh", "overwrite"];

#[allow(non_upper_case_globals)]
impl Setting {
    /// `fresh`: start a run over instead of resuming its checkpoint.
    pub const fresh: Setting = Setting("fresh");
    /// `overwrite`: replace a completed run in the run directory.
    pub const overwrite: Setting = Setting("overwrite");

    /// A setting declared by `run_settings!` (its constants); not public, so that every
    /// setting is a known key.
    pub(crate) const fn declared(key: &'static str) -> Setting {
        Setting(key)
    }

    /// The run-spec key (`max_len`), or the switch's name (`fresh`).
    pub fn key(self) -> &'static str {
        self.0
    }

    /// The `bertlab` flag: `--` and the key with `-` for `_` (`--max-len`), except
    /// `dataset_config`, whose short spelling `--config` every command accepts.
    pub fn flag(self) -> String {
        match self.0 {
            "dataset_config" => "--config".to_string(),
            key => format!("--{}", key.replace('_', "-")),
        }
    }

    /// A switch: set by its flag alone (`--fresh`), as `true` in code.
    pub fn is_switch(self) -> bool {
        SWITCHES.contains(&self.0)
    }
}

/// How an error names a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SettingStyle {
    /// As a run spec or pipeline file spells it: `` `batch` ``, `batch = 32`,
    /// `splits = "notebook"`. The libraries' `Display`.
    #[default]
    Key,
    /// As a `bertlab` flag: `--batch`, `--batch 32`, `--splits notebook`.
    Flag,
}

impl SettingStyle {
    /// The setting alone: `` `max_len` `` or `--max-len` (a bare key is quoted so that
    /// `out` or `lr` reads as a name within a sentence).
    pub fn name(self, setting: Setting) -> String {
        match self {
            SettingStyle::Key => format!("`{}`", setting.key()),
            SettingStyle::Flag => setting.flag(),
        }
    }

    /// The setting with a number or choice as its value: `max_len = 512` or `--max-len 512`.
    pub fn with_value(self, setting: Setting, value: impl Display) -> String {
        match self {
            SettingStyle::Key => format!("{} = {value}", setting.key()),
            SettingStyle::Flag => format!("{} {value}", setting.flag()),
        }
    }

    /// The setting with a text as its value: quoted as a TOML string in the key style
    /// (`model = "org/m"`), as typed in the flag style (`--model org/m`).
    pub fn with_text(self, setting: Setting, text: &str) -> String {
        match self {
            SettingStyle::Key => format!("{} = {text:?}", setting.key()),
            SettingStyle::Flag => format!("{} {text}", setting.flag()),
        }
    }

    /// Several settings with their values: `batch = 32, max_len = 512` or
    /// `--batch 32 --max-len 512` (as typed on a command line).
    pub fn with_values(self, settings: &[(Setting, &dyn Display)]) -> String {
        let each: Vec<String> = settings.iter().map(|(s, v)| self.with_value(*s, v)).collect();
        each.join(match self {
            SettingStyle::Key => ", ",
            SettingStyle::Flag => " ",
        })
    }

    /// How to turn a switch on: `set fresh = true` or `pass --fresh`.
    pub fn turn_on(self, switch: Setting) -> String {
        match self {
            SettingStyle::Key => format!("set {}", self.with_value(switch, true)),
            SettingStyle::Flag => format!("pass {}", switch.flag()),
        }
    }
}

/// An error whose message names settings: its `Display` is `render(SettingStyle::Key)`; the
/// `bertlab` binary prints `render(SettingStyle::Flag)`. An error that wraps another
/// transparently renders the wrapped one in the same style.
pub trait NamesSettings: std::error::Error {
    /// The message, naming every setting in `style`.
    fn render(&self, style: SettingStyle) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ALL_KEYS;

    #[test]
    fn settings_are_the_spec_keys_and_the_switches() {
        assert_eq!(Setting::max_len.key(), "max_len");
        assert_eq!(Setting::of_key("max_len"), Some(Setting::max_len));
        assert_eq!(Setting::of_key("fresh"), Some(Setting::fresh));
        assert_eq!(Setting::of_key("max_length"), None);
        for key in ALL_KEYS {
            let s = Setting::of_key(key).unwrap();
            assert!(!s.is_switch() && s.flag().starts_with("--") && !s.flag().contains('_'), "{key}");
        }
        assert!(Setting::overwrite.is_switch());
        assert_eq!(Setting::dataset_config.flag(), "--config");
        assert_eq!(Setting::eval_batch.flag(), "--eval-batch");
    }

    #[test]
    fn the_key_style() {
        let k = SettingStyle::Key;
        assert_eq!(SettingStyle::default(), k);
        assert_eq!(k.name(Setting::label_column), "`label_column`");
        assert_eq!(k.with_value(Setting::subset, 0.5), "subset = 0.5");
        assert_eq!(k.with_text(Setting::model, "org/m"), "model = \"org/m\"");
        assert_eq!(
            k.with_values(&[(Setting::batch, &32), (Setting::max_len, &512)]),
            "batch = 32, max_len = 512"
        );
        assert_eq!(k.turn_on(Setting::fresh), "set fresh = true");
    }

    #[test]
    fn the_flag_style() {
        let f = SettingStyle::Flag;
        assert_eq!(f.name(Setting::label_column), "--label-column");
        assert_eq!(f.with_value(Setting::subset, 0.5), "--subset 0.5");
        assert_eq!(f.with_text(Setting::model, "org/m"), "--model org/m");
        assert_eq!(
            f.with_values(&[(Setting::batch, &32), (Setting::max_len, &512)]),
            "--batch 32 --max-len 512"
        );
        assert_eq!(f.turn_on(Setting::overwrite), "pass --overwrite");
    }
}
