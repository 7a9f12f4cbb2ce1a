//! What a failed request tells an admin: [`failure_of`] turns a
//! [`FederationError`] into a [`Failure`] — one kind of the fixed set
//! (`herald_shared::FailureKind`), a one-line message and the address
//! tried — for the store to keep as the destination's last error. Errors
//! that say nothing about the destination (its backoff not over yet, our
//! own store, a request we could not build, our answer budget) give none.

use std::io;

use herald_shared::{Failure, FailureKind};

use crate::client::FederationError;
use crate::resolve::ResolveError;

/// `Tls` when a connection failed in its TLS handshake, `Connect` otherwise
/// (refused, unreachable, timed out).
pub fn connect_kind(error: &io::Error) -> FailureKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.get_ref().map(|e| e as _);
    while let Some(e) = source {
        if e.is::<rustls::Error>() {
            return FailureKind::Tls;
        }
        source = e.source();
    }
    FailureKind::Connect
}

/// The failure `error` stands for, or `None` when it says nothing about the
/// destination.
pub fn failure_of(error: &FederationError) -> Option<Failure> {
    let failure = match error {
        FederationError::DeniedByWhitelist(_) => Failure::new(
            FailureKind::Blocked,
            "not in federation_domain_whitelist",
            None,
        ),
        FederationError::BlockedIp { ip, .. } => Failure::new(
            FailureKind::Blocked,
            &format!("resolves to {ip}, a blocked address (ip_range_blacklist)"),
            Some(ip.to_string()),
        ),
        FederationError::Http {
            status,
            address,
            error,
            ..
        } => {
            let text = match error {
                Some(e) => match &e.error {
                    Some(reason) => format!("{status} {}: {reason}", e.errcode),
                    None => format!("{status} {}", e.errcode),
                },
                None => format!("{status} (not a Matrix error body)"),
            };
            Failure::new(FailureKind::Http, &text, address.map(|a| a.to_string()))
        }
        FederationError::SendFailed {
            kind,
            address,
            source,
            ..
        } => {
            let text = match (kind, address) {
                (FailureKind::Connect, Some(a)) => format!("cannot connect to {a}: {source}"),
                (FailureKind::Tls, Some(a)) => format!("TLS with {a} failed: {source}"),
                _ => source.to_string(),
            };
            Failure::new(*kind, &text, address.map(|a| a.to_string()))
        }
        FederationError::TooLarge { limit, .. } => Failure::new(
            FailureKind::InvalidResponse,
            &format!("the answer is larger than {limit} bytes"),
            None,
        ),
        FederationError::InvalidResponse { reason, .. } => {
            Failure::new(FailureKind::InvalidResponse, reason, None)
        }
        FederationError::Resolve(e) => {
            let text = match e {
                ResolveError::InvalidServerName(_) => "not a valid server name".to_owned(),
                other => other.to_string(),
            };
            Failure::new(FailureKind::Dns, &text, None)
        }
        FederationError::NotRetrying { .. }
        | FederationError::InvalidRequest(_)
        | FederationError::Store(_)
        | FederationError::AnswerBudget { .. }
        | FederationError::LocalWrite { .. } => return None,
    };
    Some(failure)
}
