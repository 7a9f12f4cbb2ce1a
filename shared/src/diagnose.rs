//! A diagnosis of one destination, as `POST
//! /_herald/admin/v1/federation/destinations/<d>/diagnose` and `herald
//! federation diagnose NAME --json` answer it and the console draws it: the
//! checklist of steps (each with its duration, verdict and a one-line
//! message; the first failing one named by `failed_step`), and the details
//! of each part under the names matrix-federation-tester's report uses
//! (`FederationOK`, `WellKnownResult`, `DNSResult`, `ConnectionReports` with
//! `Checks`, `ConnectionErrors`, `Version`) so that people who know that
//! tool read Herald's at once. Fields without a counterpart there are
//! snake_case, as the rest of Herald's API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::FailureKind;

/// One diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagnoseReport {
    /// The server name diagnosed, as given.
    pub server_name: String,
    /// Whether federation works from here: an address passed TCP and TLS,
    /// the version answered, and the server's key checks out.
    #[serde(rename = "FederationOK")]
    pub federation_ok: bool,
    /// When the diagnosis began (ms since the epoch).
    pub started_ts: i64,
    /// How long it took, all steps together.
    pub duration_ms: u64,
    /// Index in `steps` of the first step that failed (verdict `fail`,
    /// `timeout` or `blocked`) when federation is not OK.
    pub failed_step: Option<usize>,
    /// The checklist, in the order the steps ran.
    pub steps: Vec<DiagnoseStep>,
    #[serde(rename = "WellKnownResult")]
    pub well_known_result: WellKnownResult,
    #[serde(rename = "DNSResult")]
    pub dns_result: DnsResult,
    /// Per address connected to (`ip:port`).
    #[serde(rename = "ConnectionReports")]
    pub connection_reports: BTreeMap<String, ConnectionReport>,
    /// Per address that could not be used (`ip:port`): why.
    #[serde(rename = "ConnectionErrors")]
    pub connection_errors: BTreeMap<String, String>,
    #[serde(rename = "Version")]
    pub version: VersionResult,
}

impl DiagnoseReport {
    /// The step that failed, if federation is not OK.
    pub fn failing_step(&self) -> Option<&DiagnoseStep> {
        self.failed_step.and_then(|i| self.steps.get(i))
    }
}

/// What a step checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// `GET https://<name>/.well-known/matrix/server`.
    WellKnown,
    /// SRV `_matrix-fed._tcp.<host>`.
    SrvMatrixFed,
    /// The deprecated SRV `_matrix._tcp.<host>`.
    SrvMatrix,
    /// A/AAAA records of the host to connect to, and what the IP range
    /// filter says of each address.
    Addresses,
    /// TCP connect to one address.
    Connect,
    /// TLS handshake with one address and the certificate's checks.
    Tls,
    /// `GET /_matrix/federation/v1/version`.
    Version,
    /// `GET /_matrix/key/v2/server` and its self-signature.
    Key,
}

impl StepName {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::WellKnown => "well_known",
            StepName::SrvMatrixFed => "srv_matrix_fed",
            StepName::SrvMatrix => "srv_matrix",
            StepName::Addresses => "addresses",
            StepName::Connect => "connect",
            StepName::Tls => "tls",
            StepName::Version => "version",
            StepName::Key => "key",
        }
    }

    /// What an admin reads in a checklist.
    pub fn label(self) -> &'static str {
        match self {
            StepName::WellKnown => ".well-known/matrix/server",
            StepName::SrvMatrixFed => "SRV _matrix-fed._tcp",
            StepName::SrvMatrix => "SRV _matrix._tcp",
            StepName::Addresses => "Addresses and IP filter",
            StepName::Connect => "TCP connect",
            StepName::Tls => "TLS",
            StepName::Version => "Federation version",
            StepName::Key => "Server key",
        }
    }
}

/// A step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Passed.
    Ok,
    /// Nothing there, which is allowed (no delegation, no SRV record).
    None,
    /// Works, but something is off (an invalid, failing or slow
    /// `.well-known` is ignored and resolution goes on without it).
    Warn,
    /// Failed.
    Fail,
    /// No answer within the step's timeout.
    Timeout,
    /// The IP range filter refused every address: nothing was connected.
    Blocked,
    /// Not run: an earlier step decided it (an IP literal has no SRV; no
    /// address passed TLS, so no version is asked).
    Skipped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::None => "none",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
            Verdict::Timeout => "timeout",
            Verdict::Blocked => "blocked",
            Verdict::Skipped => "skipped",
        }
    }

    /// `fail`, `timeout` and `blocked`: the verdicts that stop federation.
    pub fn is_failure(self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Timeout | Verdict::Blocked)
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnoseStep {
    pub step: StepName,
    /// The address (`ip:port`) for per-address steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub duration_ms: u64,
    pub verdict: Verdict,
    /// One line an admin understands (remote text truncated).
    pub message: String,
    /// The failure kind (as in a destination's last error) of a failing step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
}

/// `.well-known/matrix/server`, fetched afresh, and what Herald's cache
/// holds for the name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WellKnownResult {
    /// The delegated server name, when the answer is a valid delegation.
    #[serde(rename = "m.server")]
    pub m_server: Option<String>,
    /// Why there is no delegation (empty when there is one).
    #[serde(rename = "Result")]
    pub result: String,
    /// When the answer's caching headers say it expires (Unix seconds).
    #[serde(rename = "CacheExpiresAt")]
    pub cache_expires_at: Option<i64>,
    /// The HTTP status of the last hop, when there was an answer.
    pub status: Option<u16>,
    /// The answer's body (the first 1 KiB, as text).
    pub body: Option<String>,
    /// What the federation client's well-known cache holds for the name.
    pub cached: Option<CachedDelegation>,
}

/// One entry of the well-known cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedDelegation {
    /// The delegation cached (`None`: "no valid delegation" is cached).
    #[serde(rename = "m.server")]
    pub m_server: Option<String>,
    /// When it expires (ms since the epoch).
    pub expires_ts: i64,
}

/// The DNS part: SRV records and the addresses to try.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsResult {
    /// SRV was not looked up (an IP literal or an explicit port).
    #[serde(rename = "SRVSkipped")]
    pub srv_skipped: bool,
    #[serde(rename = "SRVRecords")]
    pub srv_records: Vec<SrvRecord>,
    #[serde(rename = "SRVError")]
    pub srv_error: Option<String>,
    /// Every address resolved (`ip:port`), in the order they are tried.
    #[serde(rename = "Addrs")]
    pub addrs: Vec<String>,
    /// Those of `Addrs` the IP range filter refuses.
    pub blocked: Vec<String>,
    /// The `Host` header requests carry.
    pub host_header: Option<String>,
    /// The name the certificate must be valid for.
    pub tls_name: Option<String>,
}

/// An SRV record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrvRecord {
    /// `_matrix-fed._tcp.<host>` or `_matrix._tcp.<host>`.
    pub service: String,
    #[serde(rename = "Target")]
    pub target: String,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "Priority")]
    pub priority: u16,
    #[serde(rename = "Weight")]
    pub weight: u16,
}

/// One address Herald connected to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectionReport {
    /// TCP connect time.
    pub connect_ms: u64,
    /// TLS protocol and cipher suite negotiated.
    #[serde(rename = "Cipher")]
    pub cipher: Option<Cipher>,
    /// The chain the server sent, leaf first.
    #[serde(rename = "Certificates")]
    pub certificates: Vec<CertificateSummary>,
    #[serde(rename = "Checks")]
    pub checks: Checks,
    /// The server's published keys (`key ID` → base64), from this address.
    #[serde(rename = "Ed25519VerifyKeys")]
    pub ed25519_verify_keys: BTreeMap<String, String>,
    /// `valid_until_ts` of the key answer.
    pub valid_until_ts: Option<i64>,
}

/// TLS protocol and cipher suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cipher {
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "CipherSuite")]
    pub cipher_suite: String,
}

/// A certificate, as far as an admin needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSummary {
    #[serde(rename = "SubjectCommonName")]
    pub subject: String,
    #[serde(rename = "IssuerCommonName")]
    pub issuer: String,
    /// Subject alternative names (DNS names and IP addresses).
    #[serde(rename = "DNSNames")]
    pub names: Vec<String>,
    /// Validity (ms since the epoch).
    pub not_before_ts: i64,
    pub not_after_ts: i64,
}

/// What was checked on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Checks {
    /// Every check below passed.
    #[serde(rename = "AllChecksOK")]
    pub all_checks_ok: bool,
    /// The certificate chain verifies for the server name (`None`: not
    /// checked, `federation_verify_certificates` is false).
    #[serde(rename = "ValidCertificates")]
    pub valid_certificates: Option<bool>,
    /// Why it does not.
    pub certificate_error: Option<String>,
    /// The key answer names the server diagnosed.
    #[serde(rename = "MatchingServerName")]
    pub matching_server_name: Option<bool>,
    /// `valid_until_ts` is in the future.
    #[serde(rename = "FutureValidUntilTS")]
    pub future_valid_until_ts: Option<bool>,
    #[serde(rename = "HasEd25519Key")]
    pub has_ed25519_key: Option<bool>,
    #[serde(rename = "AllEd25519ChecksOK")]
    pub all_ed25519_checks_ok: Option<bool>,
    /// Per key ID: its self-signature verified with the published key.
    #[serde(rename = "Ed25519Checks")]
    pub ed25519_checks: BTreeMap<String, Ed25519Check>,
}

/// One published key's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ed25519Check {
    /// The key decodes as an ed25519 public key.
    #[serde(rename = "ValidEd25519")]
    pub valid_ed25519: bool,
    /// The answer is signed by it.
    #[serde(rename = "MatchingSignature")]
    pub matching_signature: bool,
}

/// `GET /_matrix/federation/v1/version`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VersionResult {
    #[serde(rename = "Name")]
    pub name: Option<String>,
    #[serde(rename = "Version")]
    pub version: Option<String>,
    #[serde(rename = "Error")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_follow_the_federation_tester() {
        let report = DiagnoseReport {
            server_name: "example.org".into(),
            federation_ok: false,
            started_ts: 1,
            duration_ms: 2,
            failed_step: Some(0),
            steps: vec![DiagnoseStep {
                step: StepName::Connect,
                address: Some("192.0.2.1:8448".into()),
                duration_ms: 3,
                verdict: Verdict::Fail,
                message: "connection refused".into(),
                kind: Some(FailureKind::Connect),
            }],
            well_known_result: WellKnownResult::default(),
            dns_result: DnsResult::default(),
            connection_reports: BTreeMap::new(),
            connection_errors: BTreeMap::new(),
            version: VersionResult::default(),
        };
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "FederationOK",
            "WellKnownResult",
            "DNSResult",
            "ConnectionReports",
            "ConnectionErrors",
            "Version",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert_eq!(json["steps"][0]["verdict"], "fail");
        assert_eq!(json["steps"][0]["step"], "connect");
        assert_eq!(json["steps"][0]["kind"], "connect");
        let back: DiagnoseReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        assert_eq!(back.failing_step().map(|s| s.step), Some(StepName::Connect));
    }
}
