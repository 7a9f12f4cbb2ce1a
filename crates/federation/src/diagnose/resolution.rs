//! The resolution steps of a diagnosis: `.well-known`, SRV, addresses and
//! the IP range filter.

use super::*;

impl Diagnoser {
    /// The `.well-known` step; the name to resolve next (the delegated one
    /// when there is a valid delegation).
    pub(super) async fn well_known(&self, name: &ServerName, run: &mut Run) -> ServerName {
        let host = match (&name.host, name.port) {
            (Host::Name(host), None) => host.clone(),
            (Host::Ip(_), _) => {
                run.skip(
                    StepName::WellKnown,
                    "the server name is an IP literal: no delegation is looked up",
                );
                run.well_known.result = "skipped: IP literal".into();
                return name.clone();
            }
            (Host::Name(_), Some(_)) => {
                run.skip(
                    StepName::WellKnown,
                    "the server name has an explicit port: no delegation is looked up",
                );
                run.well_known.result = "skipped: explicit port".into();
                return name.clone();
            }
        };
        let well_known = self.resolver.well_known();
        run.well_known.cached =
            well_known
                .cached(&host)
                .map(|(m_server, expires)| CachedDelegation {
                    m_server,
                    expires_ts: ms_since_epoch(expires),
                });
        let (answer, took) = self.step(well_known.fetch_raw(&host)).await;
        let none_because = |run: &mut Run, verdict: Verdict, why: String| {
            run.well_known.result = why.clone();
            let message = match verdict {
                Verdict::Warn => format!("{why}; resolution goes on without delegation"),
                _ => format!("no delegation ({why})"),
            };
            run.push(StepName::WellKnown, None, took, verdict, message, None);
        };
        let (status, headers, body) = match answer {
            None => {
                none_because(
                    run,
                    Verdict::Warn,
                    format!("no answer within {}", secs(self.settings.step_timeout)),
                );
                return name.clone();
            }
            Some(Err(e)) => {
                let verdict = match e {
                    WellKnownError::Request(..)
                    | WellKnownError::NoAddresses(_)
                    | WellKnownError::Dns(_) => Verdict::None,
                    _ => Verdict::Warn,
                };
                none_because(run, verdict, short(&e.to_string()));
                return name.clone();
            }
            Some(Ok(answer)) => answer,
        };
        run.well_known.status = Some(status.as_u16());
        run.well_known.body = Some(short_body(&body));
        if status != StatusCode::OK {
            let verdict = if status.is_server_error() {
                Verdict::Warn
            } else {
                Verdict::None
            };
            none_because(run, verdict, format!("HTTP {}", status.as_u16()));
            return name.clone();
        }
        match parse_body(&body) {
            Ok(server) => {
                let now = SystemTime::now();
                let period = cache_period_from_headers(&headers, now)
                    .map(|p| p.clamp(MIN_CACHE_PERIOD, MAX_CACHE_PERIOD));
                run.well_known.cache_expires_at = period.map(|p| ms_since_epoch(now + p) / 1000);
                run.well_known.m_server = Some(server.clone());
                // parse_body checked it.
                match ServerName::parse(&server) {
                    Ok(delegated) => {
                        run.push(
                            StepName::WellKnown,
                            None,
                            took,
                            Verdict::Ok,
                            format!("delegates to {}", short(&server)),
                            None,
                        );
                        delegated
                    }
                    Err(_) => {
                        none_because(run, Verdict::Warn, "invalid m.server".into());
                        name.clone()
                    }
                }
            }
            Err(e) => {
                none_because(
                    run,
                    Verdict::Warn,
                    format!("invalid answer: {}", short(&e.to_string())),
                );
                name.clone()
            }
        }
    }

    /// SRV and address steps for `target`; `None` when there is nothing to
    /// connect to (no answer, or blocked).
    pub(super) async fn resolve(&self, target: &ServerName, run: &mut Run) -> Option<Resolved> {
        let tls_name = match &target.host {
            Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
            Host::Name(name) => match rustls::pki_types::ServerName::try_from(name.clone()) {
                Ok(n) => n,
                Err(_) => {
                    run.push(
                        StepName::Addresses,
                        None,
                        Duration::ZERO,
                        Verdict::Fail,
                        format!("{name:?} is not a valid TLS name"),
                        Some(FailureKind::Dns),
                    );
                    return None;
                }
            },
        };
        run.dns.host_header = Some(target.to_string());
        run.dns.tls_name = Some(target.host.to_string());
        let resolved = |candidates| Resolved {
            candidates,
            host_header: target.to_string(),
            tls_name: tls_name.clone(),
        };
        let host = match &target.host {
            Host::Ip(ip) => {
                run.dns.srv_skipped = true;
                run.skip(StepName::SrvMatrixFed, "IP literal: no SRV look-up");
                run.skip(StepName::SrvMatrix, "IP literal: no SRV look-up");
                let addr = SocketAddr::new(*ip, target.port.unwrap_or(DEFAULT_PORT));
                let candidates = self.filter(
                    run,
                    Duration::ZERO,
                    format!("IP literal {}", target.host),
                    vec![addr],
                )?;
                return Some(resolved(candidates));
            }
            Host::Name(host) => host.clone(),
        };
        // (host, port) pairs to look up.
        let mut lookups: Vec<(String, u16)> = Vec::new();
        if let Some(port) = target.port {
            run.dns.srv_skipped = true;
            run.skip(StepName::SrvMatrixFed, "explicit port: no SRV look-up");
            run.skip(StepName::SrvMatrix, "explicit port: no SRV look-up");
            lookups.push((host.clone(), port));
        } else {
            for (service, step) in [
                ("_matrix-fed._tcp", StepName::SrvMatrixFed),
                ("_matrix._tcp", StepName::SrvMatrix),
            ] {
                if !lookups.is_empty() {
                    run.skip(step, "not needed: an earlier SRV record answered");
                    continue;
                }
                let srv_name = format!("{service}.{host}");
                let (answer, took) = self.step(self.resolver.dns().lookup_srv(&srv_name)).await;
                match answer {
                    None => {
                        let why = format!(
                            "no DNS answer for {srv_name} within {}",
                            secs(self.settings.step_timeout)
                        );
                        run.dns.srv_error = Some(why.clone());
                        run.push(
                            step,
                            None,
                            took,
                            Verdict::Timeout,
                            why,
                            Some(FailureKind::Dns),
                        );
                        return None;
                    }
                    Some(Err(e)) => {
                        let why = short(&e.to_string());
                        run.dns.srv_error = Some(why.clone());
                        run.push(step, None, took, Verdict::Fail, why, Some(FailureKind::Dns));
                        return None;
                    }
                    Some(Ok(SrvAnswer::None)) => {
                        run.push(
                            step,
                            None,
                            took,
                            Verdict::None,
                            format!("no {srv_name} record"),
                            None,
                        );
                    }
                    Some(Ok(SrvAnswer::Unavailable)) => {
                        let why =
                            format!("{srv_name} has target \".\": the service is unavailable");
                        run.dns.srv_error = Some(why.clone());
                        run.push(step, None, took, Verdict::Fail, why, Some(FailureKind::Dns));
                        return None;
                    }
                    Some(Ok(SrvAnswer::Targets(targets))) => {
                        let listed: Vec<String> = targets
                            .iter()
                            .map(|t| format!("{}:{}", t.target, t.port))
                            .collect();
                        run.push(
                            step,
                            None,
                            took,
                            Verdict::Ok,
                            short(&format!("{srv_name} → {}", listed.join(", "))),
                            None,
                        );
                        for t in targets {
                            run.dns.srv_records.push(SrvRecord {
                                service: srv_name.clone(),
                                target: t.target.clone(),
                                port: t.port,
                                priority: t.priority,
                                weight: t.weight,
                            });
                            lookups.push((t.target, t.port));
                        }
                    }
                }
            }
            if lookups.is_empty() {
                lookups.push((host.clone(), DEFAULT_PORT));
            }
        }
        // A/AAAA of each name, within one step's time.
        let dns = self.resolver.dns();
        let looked_up = async {
            let mut found = Vec::new();
            let mut errors = Vec::new();
            for (name, port) in &lookups {
                if let Ok(ip) = name.parse::<IpAddr>() {
                    found.push(SocketAddr::new(ip, *port));
                    continue;
                }
                match dns.lookup_ip(name).await {
                    Ok(ips) if ips.is_empty() => {
                        errors.push(format!("{name} has no A/AAAA record"))
                    }
                    Ok(ips) => found.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, *port))),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (found, errors)
        };
        let names: Vec<&str> = lookups.iter().map(|(n, _)| n.as_str()).collect();
        let names = names.join(", ");
        let (answer, took) = self.step(looked_up).await;
        let (found, errors) = match answer {
            None => {
                run.push(
                    StepName::Addresses,
                    None,
                    took,
                    Verdict::Timeout,
                    format!(
                        "no DNS answer for {names} within {}",
                        secs(self.settings.step_timeout)
                    ),
                    Some(FailureKind::Dns),
                );
                return None;
            }
            Some(answer) => answer,
        };
        if found.is_empty() {
            let why = if errors.is_empty() {
                format!("{names} resolves to no address")
            } else {
                short(&errors.join("; "))
            };
            run.push(
                StepName::Addresses,
                None,
                took,
                Verdict::Fail,
                why,
                Some(FailureKind::Dns),
            );
            return None;
        }
        let candidates = self.filter(run, took, names, found)?;
        Some(resolved(candidates))
    }

    /// The addresses step's verdict: every address through the IP filter.
    /// As the client, one blocked address blocks the name.
    fn filter(
        &self,
        run: &mut Run,
        took: Duration,
        what: String,
        found: Vec<SocketAddr>,
    ) -> Option<Vec<SocketAddr>> {
        run.dns.addrs = found.iter().map(SocketAddr::to_string).collect();
        let blocked: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| !self.ip_filter.is_allowed(a.ip()))
            .collect();
        let listed = run.dns.addrs.join(", ");
        if !blocked.is_empty() {
            run.dns.blocked = blocked.iter().map(SocketAddr::to_string).collect();
            for a in &blocked {
                run.errors.insert(
                    a.to_string(),
                    "blocked by the IP range filter (ip_range_blacklist / ip_range_whitelist)"
                        .into(),
                );
            }
            run.push(
                StepName::Addresses,
                None,
                took,
                Verdict::Blocked,
                short(&format!(
                    "{what} → {listed}: {} blocked by the IP range filter; nothing was connected to",
                    run.dns.blocked.join(", ")
                )),
                Some(FailureKind::Blocked),
            );
            return None;
        }
        run.push(
            StepName::Addresses,
            None,
            took,
            Verdict::Ok,
            short(&format!("{what} → {listed}")),
            None,
        );
        Some(found)
    }
}

/// The `.well-known` body as the report shows it: the first 1 KiB as text.
fn short_body(body: &[u8]) -> String {
    let end = body.len().min(MAX_BODY_SHOWN);
    String::from_utf8_lossy(&body[..end]).into_owned()
}
