//! The per-address steps of a diagnosis: TCP connect, and the TLS
//! handshake with the certificate's details and verification.

use super::*;

impl Diagnoser {
    /// Connect and TLS steps for each address (at most `max_addresses`);
    /// the first address fit for requests.
    pub(super) async fn connections(
        &self,
        resolved: &Resolved,
        run: &mut Run,
    ) -> Option<(SocketAddr, Resolved)> {
        let mut usable = None;
        let tls_name_text = crate::connect::tls_name_text(&resolved.tls_name);
        for &addr in resolved.candidates.iter().take(self.settings.max_addresses) {
            let key = addr.to_string();
            let (tcp, took) = self.step(TcpStream::connect(addr)).await;
            let tcp = match tcp {
                None => {
                    let why = format!(
                        "no TCP connection to {addr} within {}",
                        secs(self.settings.step_timeout)
                    );
                    run.errors.insert(key, why.clone());
                    run.push(
                        StepName::Connect,
                        Some(addr),
                        took,
                        Verdict::Timeout,
                        why,
                        Some(FailureKind::Connect),
                    );
                    continue;
                }
                Some(Err(e)) => {
                    let why = format!("connecting to {addr}: {e}");
                    run.errors.insert(key, why.clone());
                    run.push(
                        StepName::Connect,
                        Some(addr),
                        took,
                        Verdict::Fail,
                        why,
                        Some(FailureKind::Connect),
                    );
                    continue;
                }
                Some(Ok(tcp)) => tcp,
            };
            let mut report = ConnectionReport {
                connect_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                ..ConnectionReport::default()
            };
            run.push(
                StepName::Connect,
                Some(addr),
                took,
                Verdict::Ok,
                format!("connected to {addr}"),
                None,
            );
            let (tls, took) = self
                .step(self.handshake.connect(resolved.tls_name.clone(), tcp))
                .await;
            let failed = match tls {
                Some(Ok(tls)) => Ok(tls),
                None => Err((
                    Verdict::Timeout,
                    format!(
                        "no TLS handshake with {addr} within {}",
                        secs(self.settings.step_timeout)
                    ),
                )),
                Some(Err(e)) => Err((
                    Verdict::Fail,
                    format!(
                        "TLS handshake with {addr} failed: {}",
                        short(&e.to_string())
                    ),
                )),
            };
            let tls = match failed {
                Ok(tls) => tls,
                Err((verdict, why)) => {
                    run.errors.insert(key.clone(), why.clone());
                    run.reports.insert(key, report);
                    run.push(
                        StepName::Tls,
                        Some(addr),
                        took,
                        verdict,
                        why,
                        Some(FailureKind::Tls),
                    );
                    continue;
                }
            };
            let (_, session) = tls.get_ref();
            report.cipher = Some(Cipher {
                version: session
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                cipher_suite: session
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default(),
            });
            let chain: Vec<CertificateDer<'static>> = session
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            report.certificates = chain.iter().filter_map(|c| summarise(c)).collect();
            let verdict = match (&self.verifier, chain.split_first()) {
                (None, _) => None,
                (Some(_), None) => Some(Err("the server sent no certificate".to_owned())),
                (Some(verifier), Some((leaf, intermediates))) => Some(
                    verifier
                        .verify_server_cert(
                            leaf,
                            intermediates,
                            &resolved.tls_name,
                            &[],
                            UnixTime::now(),
                        )
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                ),
            };
            report.checks.valid_certificates = verdict.as_ref().map(Result::is_ok);
            report.checks.certificate_error = verdict
                .as_ref()
                .and_then(|v| v.as_ref().err().map(|e| short(e)));
            let protocol = report
                .cipher
                .as_ref()
                .map(|c| c.version.clone())
                .unwrap_or_default();
            let about = report
                .certificates
                .first()
                .map(|c| {
                    format!(
                        "certificate {} for [{}], issued by {}, expires {}",
                        short(&c.subject),
                        short(&c.names.join(", ")),
                        short(&c.issuer),
                        date(c.not_after_ts)
                    )
                })
                .unwrap_or_else(|| "no certificate".to_owned());
            match verdict {
                Some(Err(e)) => {
                    let why = format!(
                        "{protocol}; {about}; does not verify for {tls_name_text}: {}",
                        short(&e)
                    );
                    run.errors.insert(key.clone(), why.clone());
                    run.reports.insert(key, report);
                    run.push(
                        StepName::Tls,
                        Some(addr),
                        took,
                        Verdict::Fail,
                        why,
                        Some(FailureKind::Tls),
                    );
                }
                verified => {
                    let how = if verified.is_some() {
                        format!("verifies for {tls_name_text}")
                    } else {
                        "not verified (federation_verify_certificates is false)".to_owned()
                    };
                    run.reports.insert(key, report);
                    run.push(
                        StepName::Tls,
                        Some(addr),
                        took,
                        Verdict::Ok,
                        format!("{protocol}; {about}; {how}"),
                        None,
                    );
                    if usable.is_none() {
                        usable = Some((
                            addr,
                            Resolved {
                                candidates: vec![addr],
                                host_header: resolved.host_header.clone(),
                                tls_name: resolved.tls_name.clone(),
                            },
                        ));
                    }
                }
            }
        }
        for addr in resolved.candidates.iter().skip(self.settings.max_addresses) {
            run.errors.insert(
                addr.to_string(),
                format!(
                    "not tried: a diagnosis tries at most {} addresses",
                    self.settings.max_addresses
                ),
            );
        }
        usable
    }
}

/// Subject, issuer, names and validity of a DER certificate.
fn summarise(der: &CertificateDer<'_>) -> Option<CertificateSummary> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let common_name = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| name.to_string())
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        names.push(IpAddr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        names.push(IpAddr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let validity = cert.validity();
    Some(CertificateSummary {
        subject: common_name(cert.subject()),
        issuer: common_name(cert.issuer()),
        names,
        not_before_ts: validity.not_before.timestamp().saturating_mul(1000),
        not_after_ts: validity.not_after.timestamp().saturating_mul(1000),
    })
}
