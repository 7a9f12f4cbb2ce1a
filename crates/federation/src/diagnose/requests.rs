//! The request steps of a diagnosis: `GET /_matrix/federation/v1/version`
//! and `GET /_matrix/key/v2/server` with its self-signature.

use super::*;

impl Diagnoser {
    /// `GET path` on a new connection to `addr`: the status and the body
    /// (at most [`MAX_ANSWER`]), within one step's time.
    async fn get(
        &self,
        addr: SocketAddr,
        resolved: &Resolved,
        path: &str,
    ) -> (Option<Result<(StatusCode, Bytes), String>>, Duration) {
        let exchange = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connecting to {addr}: {e}"))?;
            let tls = self
                .handshake
                .connect(resolved.tls_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP/1.1 with {addr}: {e}"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let request = Request::get(path)
                .header(HOST, resolved.host_header.as_str())
                .header(USER_AGENT, USER_AGENT_VALUE)
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("no answer from {addr}: {e}"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        self.step(exchange).await
    }

    /// The version step; whether it passed.
    pub(super) async fn version(
        &self,
        addr: SocketAddr,
        resolved: &Resolved,
        run: &mut Run,
    ) -> bool {
        let (answer, took) = self
            .get(addr, resolved, "/_matrix/federation/v1/version")
            .await;
        let json = match self.judge_answer(answer, StepName::Version, addr, took, run) {
            Some(json) => json,
            None => {
                run.version.error = run.steps.last().map(|s| s.message.clone());
                return false;
            }
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(short);
        run.version.name = text(json.pointer("/server/name"));
        run.version.version = text(json.pointer("/server/version"));
        match (&run.version.name, &run.version.version) {
            (Some(name), version) => {
                let message = format!("{name} {}", version.as_deref().unwrap_or(""));
                run.push(
                    StepName::Version,
                    Some(addr),
                    took,
                    Verdict::Ok,
                    message.trim_end().to_owned(),
                    None,
                );
                true
            }
            (None, _) => {
                let why = "the answer has no server.name".to_owned();
                run.version.error = Some(why.clone());
                run.push(
                    StepName::Version,
                    Some(addr),
                    took,
                    Verdict::Fail,
                    why,
                    Some(FailureKind::InvalidResponse),
                );
                false
            }
        }
    }

    /// A version or key answer: its JSON when it is a 200 JSON object, or
    /// the step pushed as failed.
    fn judge_answer(
        &self,
        answer: Option<Result<(StatusCode, Bytes), String>>,
        step: StepName,
        addr: SocketAddr,
        took: Duration,
        run: &mut Run,
    ) -> Option<Value> {
        let fail = |run: &mut Run, verdict, why: String, kind| {
            run.push(step, Some(addr), took, verdict, why, Some(kind));
        };
        let (status, body) = match answer {
            None => {
                fail(
                    run,
                    Verdict::Timeout,
                    format!("no answer within {}", secs(self.settings.step_timeout)),
                    FailureKind::Timeout,
                );
                return None;
            }
            Some(Err(e)) => {
                fail(run, Verdict::Fail, short(&e), FailureKind::Connect);
                return None;
            }
            Some(Ok(answer)) => answer,
        };
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status != StatusCode::OK {
            let errcode = json
                .as_ref()
                .and_then(|j| j.get("errcode"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let error = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let why = format!("HTTP {} {errcode} {error}", status.as_u16());
            fail(run, Verdict::Fail, short(why.trim_end()), FailureKind::Http);
            return None;
        }
        match json {
            Some(json @ Value::Object(_)) => Some(json),
            _ => {
                fail(
                    run,
                    Verdict::Fail,
                    "the answer is not a JSON object".into(),
                    FailureKind::InvalidResponse,
                );
                None
            }
        }
    }

    /// The key step; whether it passed.
    pub(super) async fn key(
        &self,
        server_name: &str,
        addr: SocketAddr,
        resolved: &Resolved,
        run: &mut Run,
    ) -> bool {
        let (answer, took) = self.get(addr, resolved, "/_matrix/key/v2/server").await;
        let Some(json) = self.judge_answer(answer, StepName::Key, addr, took, run) else {
            return false;
        };
        let mut checks = Checks::default();
        let mut keys = BTreeMap::new();
        let mut problems = Vec::new();
        let answered_name = json.get("server_name").and_then(Value::as_str);
        checks.matching_server_name = Some(answered_name == Some(server_name));
        if answered_name != Some(server_name) {
            problems.push(format!(
                "server_name is {:?}, not {server_name:?}",
                short(answered_name.unwrap_or(""))
            ));
        }
        let valid_until_ts = json.get("valid_until_ts").and_then(Value::as_i64);
        let future = valid_until_ts.is_some_and(|ts| ts > now_ms());
        checks.future_valid_until_ts = Some(future);
        if !future {
            problems.push(match valid_until_ts {
                Some(ts) => format!("valid_until_ts {} is in the past", date(ts)),
                None => "no valid_until_ts".to_owned(),
            });
        }
        let verify_keys = json
            .get("verify_keys")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (key_id, key) in verify_keys
            .iter()
            .filter(|(id, _)| id.starts_with("ed25519:"))
        {
            let text = key.get("key").and_then(Value::as_str).unwrap_or("");
            keys.insert(key_id.clone(), short(text));
            let (valid, matching) = match VerifyKey::from_base64(text) {
                Ok(verify_key) => (
                    true,
                    verify_json(server_name, key_id, &verify_key, &json).is_ok(),
                ),
                Err(_) => (false, false),
            };
            if !valid {
                problems.push(format!("{} is not an ed25519 key", short(key_id)));
            } else if !matching {
                problems.push(format!(
                    "the answer's signature by {} does not verify with the key it publishes",
                    short(key_id)
                ));
            }
            checks.ed25519_checks.insert(
                key_id.clone(),
                Ed25519Check {
                    valid_ed25519: valid,
                    matching_signature: matching,
                },
            );
        }
        checks.has_ed25519_key = Some(!checks.ed25519_checks.is_empty());
        if checks.ed25519_checks.is_empty() {
            problems.push("no ed25519 key in verify_keys".to_owned());
        }
        checks.all_ed25519_checks_ok = Some(
            !checks.ed25519_checks.is_empty()
                && checks
                    .ed25519_checks
                    .values()
                    .all(|c| c.valid_ed25519 && c.matching_signature),
        );
        let ok = problems.is_empty();
        let key_ids: Vec<&str> = keys.keys().map(String::as_str).collect();
        let message = if ok {
            format!(
                "{} valid until {}, self-signature verified",
                short(&key_ids.join(", ")),
                date(valid_until_ts.unwrap_or(0))
            )
        } else {
            short(&problems.join("; "))
        };
        let report = run.reports.entry(addr.to_string()).or_default();
        checks.valid_certificates = report.checks.valid_certificates;
        checks.certificate_error = report.checks.certificate_error.take();
        checks.all_checks_ok = ok && checks.valid_certificates != Some(false);
        report.checks = checks;
        report.ed25519_verify_keys = keys;
        report.valid_until_ts = valid_until_ts;
        if ok {
            run.push(StepName::Key, Some(addr), took, Verdict::Ok, message, None);
        } else {
            run.push(
                StepName::Key,
                Some(addr),
                took,
                Verdict::Fail,
                message,
                Some(FailureKind::InvalidResponse),
            );
        }
        ok
    }
}
