//! HTTP for Hub requests: timeouts, retries with backoff, the token sent to the Hub alone,
//! and failures described in words a user can act on.

use std::io::Read;
use std::time::Duration;

use crate::HubError;

/// The longest wait between two attempts, however many retries are allowed.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// More redirects than this in a row is a loop.
const MAX_REDIRECTS: usize = 10;

/// Timeouts and retries of Hub requests.
///
/// The defaults (10 s to connect, 10 s without data, 3 retries after 1, 2 and 4 s) ride out a
/// flaky link or a Hub restart, and turn a server that accepts the connection and never
/// answers into an error within a minute (4 × 10 s + 7 s), as Python's `huggingface_hub`
/// (10 s download and ETag timeouts) does, instead of a hang. A slow but live download is never
/// cut: the read timeout counts seconds without data, and each retry resumes the partial file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkSettings {
    /// How long to wait for a connection (TCP and TLS) to be established.
    pub connect_timeout: Duration,
    /// How long to wait for data: the answer's first byte, and each pause within a body.
    pub read_timeout: Duration,
    /// Attempts after the first one, on connection errors, timeouts, 5xx and 429 answers. Each
    /// retry of a download resumes the partial file.
    pub retries: u32,
    /// The wait before the first retry; it doubles for each further one (at most 30 s).
    pub backoff: Duration,
}

impl Default for NetworkSettings {
    fn default() -> NetworkSettings {
        NetworkSettings {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_secs(1),
        }
    }
}

impl NetworkSettings {
    /// The defaults, changed by `BERTLAB_HUB_TIMEOUT_SECS` (seconds, fractions allowed: both the
    /// connect and the read timeout) and `BERTLAB_HUB_RETRIES` (retries after the first attempt).
    pub fn from_env() -> Result<NetworkSettings, HubError> {
        NetworkSettings::from_vars(|name| std::env::var(name).ok())
    }

    /// How long a server that accepts every connection and never answers holds a request
    /// before it fails: each attempt's read timeout plus the waits between attempts.
    pub fn silent_server_wait(&self) -> Duration {
        let mut total = self.read_timeout;
        let mut wait = self.backoff;
        for _ in 0..self.retries {
            total += wait + self.read_timeout;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        total
    }

    fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<NetworkSettings, HubError> {
        let mut settings = NetworkSettings::default();
        let var = |name| lookup(name).filter(|v: &String| !v.trim().is_empty());
        if let Some(value) = var("BERTLAB_HUB_TIMEOUT_SECS") {
            let secs =
                value.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0);
            let secs = secs.ok_or(HubError::Setting {
                name: "BERTLAB_HUB_TIMEOUT_SECS",
                value,
                expected:
                    "expected seconds to wait for a connection or for data, a number in (0, 86400], e.g. 120",
            })?;
            settings.connect_timeout = Duration::from_secs_f64(secs);
            settings.read_timeout = Duration::from_secs_f64(secs);
        }
        if let Some(value) = var("BERTLAB_HUB_RETRIES") {
            let retries = value.trim().parse::<u32>().ok().filter(|n| *n <= 100);
            settings.retries = retries.ok_or(HubError::Setting {
                name: "BERTLAB_HUB_RETRIES",
                value,
                expected:
                    "expected how many times to retry a failed request, a whole number in 0..=100, e.g. 4",
            })?;
        }
        Ok(settings)
    }
}

/// `60 s`, `1.5 s`, `0.25 s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Why a request failed, and whether trying again may help.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with an error status.
    Status { url: String, code: u16, text: String, detail: String },
    /// No connection could be made (refused, unreachable, DNS, proxy, connect timeout).
    NoConnection { url: String, detail: String },
    /// Connected, but no answer came within the read timeout.
    NoAnswer { url: String, timeout: Duration },
    /// A body stopped arriving for longer than the read timeout.
    Stalled { url: String, timeout: Duration, got: u64, size: Option<u64> },
    /// The connection closed (or broke) before the whole body arrived.
    Dropped { url: String, got: u64, size: Option<u64>, detail: String },
    /// Another network error, worth retrying.
    Network { url: String, detail: String },
    /// An answer that makes no sense for a Hub (missing headers, wrong ranges): retrying won't help.
    Protocol { url: String, detail: String },
    /// The cache could not be written; nothing to do with the network.
    Cache(HubError),
}

impl Failure {
    /// Connection problems, timeouts, 5xx and 429 may pass; 4xx and nonsense will not.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Failure::Status { code, .. } => *code == 429 || *code >= 500,
            Failure::NoConnection { .. }
            | Failure::NoAnswer { .. }
            | Failure::Stalled { .. }
            | Failure::Dropped { .. }
            | Failure::Network { .. } => true,
            Failure::Protocol { .. } | Failure::Cache(_) => false,
        }
    }

    pub(crate) fn url(&self) -> &str {
        match self {
            Failure::Status { url, .. }
            | Failure::NoConnection { url, .. }
            | Failure::NoAnswer { url, .. }
            | Failure::Stalled { url, .. }
            | Failure::Dropped { url, .. }
            | Failure::Network { url, .. }
            | Failure::Protocol { url, .. } => url,
            Failure::Cache(_) => "",
        }
    }

    /// What happened, in one clause.
    pub(crate) fn reason(&self) -> String {
        let of = |got: &u64, size: &Option<u64>| match size {
            Some(size) => format!("{got} of {size} bytes"),
            None => format!("{got} bytes"),
        };
        match self {
            Failure::Status { code, text, detail, .. } if detail.is_empty() => format!("HTTP {code} {text}"),
            Failure::Status { code, text, detail, .. } => format!("HTTP {code} {text} ({detail})"),
            Failure::NoConnection { detail, .. } => format!("could not connect: {detail}"),
            Failure::NoAnswer { timeout, .. } => {
                format!("no answer within {} (read timeout)", secs(*timeout))
            }
            Failure::Stalled { timeout, got, size, .. } => {
                format!(
                    "the download stalled: no data within {} (read timeout) after {}",
                    secs(*timeout),
                    of(got, size)
                )
            }
            Failure::Dropped { got, size, detail, .. } => {
                format!("connection dropped after {} ({detail})", of(got, size))
            }
            Failure::Network { detail, .. } | Failure::Protocol { detail, .. } => detail.clone(),
            Failure::Cache(e) => e.to_string(),
        }
    }

    /// What a user can do about it.
    pub(crate) fn advice(&self, endpoint: &str) -> String {
        let offline =
            "to work offline set HF_HUB_OFFLINE=1 (or --offline) with the files already in the HF cache";
        match self {
            Failure::Status { code: 401 | 403, .. } => format!(
                "The repository may be private or gated: accept its terms on the Hub, then set HF_TOKEN (or run \
                 `huggingface-cli login`) with a token that may read it; {offline}"
            ),
            Failure::Status { code: 404, .. } => "Check the repository id, the revision and the file name (a private \
                 repository also answers 404 without a token: set HF_TOKEN or run `huggingface-cli login`)"
                .to_string(),
            Failure::Status { code, .. } if *code == 429 || *code >= 500 => {
                format!("The Hub ({endpoint}) is failing or limiting requests: try again later; {offline}")
            }
            Failure::Protocol { .. } | Failure::Status { .. } => format!(
                "Is HF_ENDPOINT ({endpoint}) a Hugging Face Hub? Unset it to use {}; {offline}",
                crate::DEFAULT_ENDPOINT
            ),
            Failure::Cache(_) => "Fix the cache folder and run again".to_string(),
            _ => format!(
                "Check the network and HF_ENDPOINT (now {endpoint}); on a slow link raise BERTLAB_HUB_TIMEOUT_SECS \
                 (seconds) or BERTLAB_HUB_RETRIES; {offline}"
            ),
        }
    }
}

/// Sends requests to one Hub endpoint and the CDNs it redirects to.
pub(crate) struct Client {
    direct: ureq::Agent,
    proxied: ureq::Agent,
    origin: Option<String>,
    token: Option<String>,
    no_proxy: Vec<String>,
    pub(crate) settings: NetworkSettings,
    pub(crate) endpoint: String,
}

impl Client {
    pub(crate) fn new(endpoint: &str, token: Option<String>, settings: NetworkSettings) -> Client {
        let agent = |proxy: bool| {
            ureq::AgentBuilder::new()
                .timeout_connect(settings.connect_timeout)
                .timeout_read(settings.read_timeout)
                .timeout_write(settings.read_timeout)
                // Redirects are followed by hand: the first Hub answer's headers matter, and the
                // token must not follow a redirect to another host.
                .redirects(0)
                .user_agent(concat!("bertlab-hub/", env!("CARGO_PKG_VERSION"), "; rust"))
                .try_proxy_from_env(proxy)
                .build()
        };
        let no_proxy = ["NO_PROXY", "no_proxy"]
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .flat_map(|list| {
                list.split(',')
                    .map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .filter(|h| !h.is_empty())
            .collect();
        Client {
            direct: agent(false),
            proxied: agent(true),
            origin: origin(endpoint),
            token,
            no_proxy,
            settings,
            endpoint: endpoint.to_string(),
        }
    }

    /// ureq 2 honours proxy variables but not `NO_PROXY`; loopback never goes through a proxy.
    fn bypasses_proxy(&self, url: &str) -> bool {
        let Some(host) = host(url) else { return true };
        host == "localhost"
            || host.starts_with("127.")
            || host == "[::1]"
            || self.no_proxy.iter().any(|np| np == "*" || host == *np || host.ends_with(&format!(".{np}")))
    }

    /// One GET without following redirects. 4xx/5xx become [`Failure::Status`], except 416,
    /// which range probes of empty files get and read like any other answer.
    pub(crate) fn send(&self, url: &str, range: Option<&str>) -> Result<ureq::Response, Failure> {
        let agent = if self.bypasses_proxy(url) { &self.direct } else { &self.proxied };
        // Identity encoding: byte counts and resumed ranges must refer to the file itself.
        let mut request = agent.get(url).set("Accept-Encoding", "identity");
        if let Some(range) = range {
            request = request.set("Range", range);
        }
        // The token goes to the endpoint only: a CDN on another origin needs none (its URLs are
        // signed) and must not see it.
        if let Some(token) = &self.token {
            if self.origin.is_some() && origin(url) == self.origin {
                request = request.set("Authorization", &format!("Bearer {token}"));
            }
        }
        tracing::debug!(url, range, "Hub request");
        match request.call() {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(416, response)) => Ok(response),
            Err(ureq::Error::Status(code, response)) => Err(status_failure(url, code, response)),
            Err(ureq::Error::Transport(transport)) => Err(transport_failure(url, transport, &self.settings)),
        }
    }

    /// A GET that follows redirects (sending the token only where [`Client::send`] does).
    /// Returns the final URL with its answer.
    pub(crate) fn get_following(
        &self,
        url: &str,
        range: Option<&str>,
    ) -> Result<(String, ureq::Response), Failure> {
        let mut current = url.to_string();
        for _ in 0..MAX_REDIRECTS {
            let response = self.send(&current, range)?;
            if !(300..400).contains(&response.status()) {
                return Ok((current, response));
            }
            current = location(&current, &response)?.0;
        }
        Err(Failure::Protocol {
            url: current,
            detail: format!("more than {MAX_REDIRECTS} redirects in a row"),
        })
    }

    /// Run `attempt` until it succeeds, fails for good, or the retries are spent; returns the
    /// last failure with the number of attempts made.
    pub(crate) fn retrying<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, (Failure, u32)> {
        let mut wait = self.settings.backoff;
        let mut attempts = 1;
        loop {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(failure) if failure.retryable() && attempts <= self.settings.retries => {
                    tracing::info!(
                        "{}: {}; retrying in {} (attempt {} of {})",
                        failure.url(),
                        failure.reason(),
                        secs(wait),
                        attempts + 1,
                        self.settings.retries + 1
                    );
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_BACKOFF);
                    attempts += 1;
                }
                Err(failure) => return Err((failure, attempts)),
            }
        }
    }
}

/// The reason of a failure after `attempts`, e.g. `…; gave up after 5 attempts`.
pub(crate) fn final_reason(failure: &Failure, attempts: u32) -> String {
    if attempts > 1 {
        format!("{}; gave up after {attempts} attempts", failure.reason())
    } else {
        failure.reason()
    }
}

/// The target of a 3xx answer, and whether it was relative (same site, e.g. a renamed repo).
pub(crate) fn location(url: &str, response: &ureq::Response) -> Result<(String, bool), Failure> {
    let Some(location) = response.header("Location") else {
        return Err(Failure::Protocol {
            url: url.to_string(),
            detail: format!("a {} answer without a Location header", response.status()),
        });
    };
    Ok(resolve_location(url, location))
}

fn resolve_location(base: &str, location: &str) -> (String, bool) {
    if location.contains("://") && !location.starts_with('/') {
        return (location.to_string(), false);
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    if let Some(rest) = location.strip_prefix("//") {
        return (format!("{}{rest}", &base[..scheme_end]), false);
    }
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    if location.starts_with('/') {
        return (format!("{}{location}", &base[..path_start]), true);
    }
    let path = &base[..base.find('?').unwrap_or(base.len())];
    let dir_end = path.rfind('/').filter(|i| *i >= path_start).map_or(path.len(), |i| i + 1);
    let sep = if dir_end == path.len() && !path.ends_with('/') { "/" } else { "" };
    (format!("{}{sep}{location}", &path[..dir_end]), true)
}

/// `scheme://host:port`, lowercased, with the default port made explicit.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?.to_ascii_lowercase();
    let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        && !authority.ends_with(']');
    if has_port {
        return Some(format!("{scheme}://{authority}"));
    }
    let port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => 0,
    };
    Some(format!("{scheme}://{authority}:{port}"))
}

fn host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?.rsplit('@').next()?.to_ascii_lowercase();
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().map(str::to_string);
    }
    Some(authority.split(':').next()?.to_string())
}

/// Percent-encode all but RFC 3986's unreserved characters (and `/` where `keep_slash`), as
/// Python's `quote` does for revisions (`safe=""`) and file names (`safe="/"`).
pub(crate) fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn status_failure(url: &str, code: u16, response: ureq::Response) -> Failure {
    let text = response.status_text().to_string();
    let error_code = response.header("X-Error-Code").map(str::to_string);
    let message = response.header("X-Error-Message").map(str::to_string);
    let mut body = String::new();
    // Only the start of the body: it may be a whole HTML page.
    let _ = response.into_reader().take(4096).read_to_string(&mut body);
    let first_line = body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
    let first_line: String = first_line.chars().take(200).collect();
    let detail = match (error_code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) if first_line.is_empty() => code,
        (Some(code), None) => format!("{code}: {first_line}"),
        (None, Some(message)) => message,
        (None, None) => first_line,
    };
    Failure::Status { url: url.to_string(), code, text, detail }
}

fn transport_failure(url: &str, transport: ureq::Transport, settings: &NetworkSettings) -> Failure {
    use ureq::ErrorKind as K;
    let timed_out = std::error::Error::source(&transport)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock));
    // ureq prefixes its message with the URL, which the error names already.
    let text = transport.to_string();
    let detail = text.strip_prefix(&format!("{url}: ")).unwrap_or(&text).to_string();
    let url = url.to_string();
    match transport.kind() {
        K::ConnectionFailed if timed_out => Failure::NoConnection {
            url,
            detail: format!("no connection within {} (connect timeout)", secs(settings.connect_timeout)),
        },
        K::ConnectionFailed | K::Dns | K::ProxyConnect => Failure::NoConnection { url, detail },
        K::Io if timed_out => Failure::NoAnswer { url, timeout: settings.read_timeout },
        K::Io | K::BadStatus | K::BadHeader => Failure::Network { url, detail },
        _ => Failure::Protocol { url, detail },
    }
}

/// A failure while reading a body, after `got` bytes of it.
pub(crate) fn body_failure(
    url: &str,
    error: &std::io::Error,
    got: u64,
    size: Option<u64>,
    settings: &NetworkSettings,
) -> Failure {
    let url = url.to_string();
    match error.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            Failure::Stalled { url, timeout: settings.read_timeout, got, size }
        }
        _ => Failure::Dropped { url, got, size, detail: error.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_like_a_browser() {
        let base = "https://hub.example/org/m/resolve/main/config.json";
        assert_eq!(
            resolve_location(base, "https://cdn.example/x?sig=1"),
            ("https://cdn.example/x?sig=1".into(), false)
        );
        assert_eq!(resolve_location(base, "//cdn.example/x"), ("https://cdn.example/x".into(), false));
        assert_eq!(
            resolve_location(base, "/new-org/m/resolve/main/config.json"),
            ("https://hub.example/new-org/m/resolve/main/config.json".into(), true)
        );
        assert_eq!(
            resolve_location(base, "other.json"),
            ("https://hub.example/org/m/resolve/main/other.json".into(), true)
        );
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(origin("https://huggingface.co/a"), origin("https://HuggingFace.co:443/b"));
        assert_ne!(origin("https://huggingface.co/a"), origin("https://cdn-lfs.huggingface.co/a"));
        assert_ne!(origin("http://127.0.0.1:8080/a"), origin("http://127.0.0.1:8081/a"));
        assert_eq!(host("http://[::1]:80/x").as_deref(), Some("[::1]"));
        assert_eq!(host("http://user@127.0.0.1:80/x").as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn revisions_and_file_names_are_quoted_like_python() {
        assert_eq!(encode("refs/convert/parquet", false), "refs%2Fconvert%2Fparquet");
        assert_eq!(encode("plain_text/train 1.parquet", true), "plain_text/train%201.parquet");
    }

    #[test]
    fn settings_from_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            NetworkSettings::from_vars(move |name| {
                pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
            })
        };
        assert_eq!(vars(&[]).unwrap(), NetworkSettings::default());
        // A Hub that never answers is an error within a minute, as with huggingface_hub.
        assert_eq!(NetworkSettings::default().silent_server_wait(), Duration::from_secs(47));
        let short = vars(&[("BERTLAB_HUB_TIMEOUT_SECS", "0.5"), ("BERTLAB_HUB_RETRIES", "1")]).unwrap();
        assert_eq!(short.connect_timeout, Duration::from_millis(500));
        assert_eq!(short.read_timeout, Duration::from_millis(500));
        assert_eq!(short.retries, 1);
        assert_eq!(vars(&[("BERTLAB_HUB_RETRIES", " ")]).unwrap(), NetworkSettings::default());
        for (name, value) in [
            ("BERTLAB_HUB_TIMEOUT_SECS", "0"),
            ("BERTLAB_HUB_TIMEOUT_SECS", "NaN"),
            ("BERTLAB_HUB_TIMEOUT_SECS", "ten"),
            ("BERTLAB_HUB_RETRIES", "-1"),
            ("BERTLAB_HUB_RETRIES", "2.5"),
        ] {
            let err = NetworkSettings::from_vars(|n| (n == name).then(|| value.to_string())).unwrap_err();
            let err = err.to_string();
            assert!(err.starts_with(&format!("{name}=\"{value}\": expected")), "{err}");
        }
    }

    #[test]
    fn retry_policy() {
        let status =
            |code| Failure::Status { url: String::new(), code, text: String::new(), detail: String::new() };
        assert!(status(500).retryable() && status(503).retryable() && status(429).retryable());
        assert!(!status(404).retryable() && !status(401).retryable() && !status(416).retryable());
        assert_eq!(secs(Duration::from_secs(60)), "60 s");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5 s");
    }
}
