//! The destination page's Diagnose panel: a button that asks the server to
//! diagnose the destination (`POST …/destinations/<d>/diagnose`), then the
//! steps as a checklist — each with its verdict, duration and message, the
//! failing one highlighted and labelled — and the raw JSON answer one click
//! away in a `<details>`. The checklist is markup text (`inner_html`, every
//! value escaped) like the rest of the console; only the button is a view.
//!
//! In the browser the answer is read off the parsed JSON field by field
//! (the steps only) and the raw text is the browser's own
//! `JSON.stringify`, so no JSON parser is added to the WASM.

use herald_shared::DiagnoseStep;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api;
use crate::html::escape;
use crate::session::use_session;

/// A diagnosis as the console keeps it: the checklist part of the report
/// (`herald_shared::DiagnoseReport`; the rest is only shown raw) and the
/// answer as pretty-printed JSON. Kept small: every type the panel holds
/// costs the WASM its glue.
#[derive(Debug)]
pub struct Diagnosis {
    pub server_name: String,
    pub federation_ok: bool,
    pub duration_ms: u64,
    pub failed_step: Option<usize>,
    pub steps: Vec<DiagnoseStep>,
    pub raw: String,
}

impl Diagnosis {
    fn failing_step(&self) -> Option<&DiagnoseStep> {
        self.failed_step.and_then(|i| self.steps.get(i))
    }
}

/// Where the panel is.
#[derive(Debug)]
enum State {
    Idle,
    Running,
    Done(Result<Box<Diagnosis>, String>),
}

/// The checklist, the summary above it and the raw JSON below it.
pub fn report_html(d: &Diagnosis) -> String {
    let r = d;
    let mut out = String::new();
    match r.failing_step() {
        _ if r.federation_ok => out.push_str(&format!(
            r#"<p id="diagnose-summary" class="notice" role="status" data-ok="true">Federation with <strong>{}</strong> works from this server ({} ms).</p>"#,
            escape(&r.server_name),
            r.duration_ms
        )),
        Some(step) => out.push_str(&format!(
            r#"<p id="diagnose-summary" class="error" role="status" data-ok="false">Federation with <strong>{}</strong> fails at <strong>{}</strong>: {}</p>"#,
            escape(&r.server_name),
            escape(step.step.label()),
            escape(&step.message)
        )),
        None => out.push_str(&format!(
            r#"<p id="diagnose-summary" class="error" role="status" data-ok="false">Federation with <strong>{}</strong> does not work from this server.</p>"#,
            escape(&r.server_name)
        )),
    }
    out.push_str(r#"<ol id="diagnose-steps" class="checklist">"#);
    for (i, s) in r.steps.iter().enumerate() {
        step_html(&mut out, s, r.failed_step == Some(i));
    }
    out.push_str("</ol>");
    out.push_str(&format!(
        r#"<details id="diagnose-raw"><summary>Raw JSON</summary><pre tabindex="0">{}</pre></details>"#,
        escape(&d.raw)
    ));
    out
}

fn step_html(out: &mut String, s: &DiagnoseStep, failing: bool) {
    let class = if failing { r#" class="failing""# } else { "" };
    let marker = if failing {
        r#"<strong class="failing-label">Failing step</strong> "#
    } else {
        ""
    };
    let address = s
        .address
        .as_deref()
        .map(|a| format!(" {}", escape(a)))
        .unwrap_or_default();
    out.push_str(&format!(
        r#"<li data-step="{}" data-verdict="{}"{class}>{marker}<span class="verdict verdict-{}">{}</span> <strong>{}</strong>{address} <span class="muted">{} ms</span><br><span class="step-message">{}</span></li>"#,
        s.step.as_str(),
        s.verdict.as_str(),
        s.verdict.as_str(),
        s.verdict.as_str(),
        escape(s.step.label()),
        s.duration_ms,
        escape(&s.message)
    ));
}

#[component]
pub fn DiagnosePanel(
    /// The destination's server name.
    name: Memo<String>,
) -> impl IntoView {
    let session = use_session();
    let state = RwSignal::new(State::Idle);
    // Another destination's page: start afresh.
    Effect::new(move |_| {
        name.track();
        state.set(State::Idle);
    });
    let running = move || state.with(|s| matches!(s, State::Running));
    let run = move |_| {
        let Some(token) = session.token_untracked() else {
            return;
        };
        state.set(State::Running);
        let name = name.get_untracked();
        spawn_local(async move {
            let result = api::diagnose(&token, &name).await;
            if result.as_ref().is_err_and(|e| e.is_unauthorized()) {
                session.clear();
            }
            state.set(State::Done(
                result
                    .map(Box::new)
                    .map_err(|e| api::admin_error_message(&e)),
            ));
        });
    };
    let region = move || {
        state.with(|s| match s {
            State::Idle => String::new(),
            State::Running => {
                r#"<p id="diagnose-running" class="muted" aria-busy="true">Diagnosing… each step may take up to its timeout.</p>"#.to_owned()
            }
            State::Done(Ok(d)) => report_html(d),
            State::Done(Err(e)) => crate::html::error("diagnose-error", e),
        })
    };
    view! {
        <section id="diagnose" aria-labelledby="diagnose-title">
            <h2 id="diagnose-title">"Diagnose"</h2>
            <div class="toolbar">
                <button type="button" id="diagnose-run" on:click=run disabled=running>
                    {move || if running() { "Diagnosing…" } else { "Diagnose" }}
                </button>
                <span class="muted">
                    "Checks from this server: .well-known, SRV, addresses and the IP filter, TCP, TLS, version and key."
                </span>
            </div>
            <div id="diagnose-region" aria-live="polite" inner_html=region></div>
        </section>
    }
}

#[cfg(feature = "hydrate")]
mod read {
    use super::Diagnosis;
    use herald_shared::{DiagnoseStep, StepName, Verdict};
    use js_sys::{Array, Reflect, JSON};
    use wasm_bindgen::JsValue;

    fn get(v: &JsValue, key: &str) -> JsValue {
        Reflect::get(v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    }

    fn string(v: &JsValue, key: &str) -> Result<String, String> {
        get(v, key)
            .as_string()
            .ok_or_else(|| format!("field `{key}` is missing or not a string"))
    }

    fn count(v: &JsValue, key: &str) -> Option<u64> {
        get(v, key)
            .as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u64)
    }

    fn step_name(text: &str) -> Option<StepName> {
        [
            StepName::WellKnown,
            StepName::SrvMatrixFed,
            StepName::SrvMatrix,
            StepName::Addresses,
            StepName::Connect,
            StepName::Tls,
            StepName::Version,
            StepName::Key,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    fn verdict(text: &str) -> Option<Verdict> {
        [
            Verdict::Ok,
            Verdict::None,
            Verdict::Warn,
            Verdict::Fail,
            Verdict::Timeout,
            Verdict::Blocked,
            Verdict::Skipped,
        ]
        .into_iter()
        .find(|v| v.as_str() == text)
    }

    impl crate::json::FromJs for Diagnosis {
        fn from_js(v: &JsValue) -> Result<Self, String> {
            let steps = get(v, "steps");
            if !Array::is_array(&steps) {
                return Err("field `steps` is missing or not a list".into());
            }
            let steps = Array::from(&steps)
                .iter()
                .map(|s| {
                    let name = string(&s, "step")?;
                    let verdict_text = string(&s, "verdict")?;
                    Ok(DiagnoseStep {
                        step: step_name(&name).ok_or_else(|| format!("unknown step {name:?}"))?,
                        address: get(&s, "address").as_string(),
                        duration_ms: count(&s, "duration_ms").unwrap_or(0),
                        verdict: verdict(&verdict_text)
                            .ok_or_else(|| format!("unknown verdict {verdict_text:?}"))?,
                        message: string(&s, "message")?,
                        kind: None,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let raw =
                JSON::stringify_with_replacer_and_space(v, &JsValue::NULL, &JsValue::from_f64(2.0))
                    .ok()
                    .and_then(|s| s.as_string())
                    .unwrap_or_default();
            Ok(Diagnosis {
                server_name: string(v, "server_name")?,
                federation_ok: get(v, "FederationOK").as_bool().unwrap_or(false),
                duration_ms: count(v, "duration_ms").unwrap_or(0),
                failed_step: count(v, "failed_step").map(|i| i as usize),
                steps,
                raw,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::{FailureKind, StepName, Verdict};

    fn diagnosis(ok: bool) -> Diagnosis {
        let step = |step, verdict, message: &str| DiagnoseStep {
            step,
            address: Some("127.0.0.1:8448".into()),
            duration_ms: 12,
            verdict,
            message: message.into(),
            kind: None,
        };
        let tls = if ok { Verdict::Ok } else { Verdict::Fail };
        Diagnosis {
            server_name: "a.org".into(),
            federation_ok: ok,
            duration_ms: 40,
            failed_step: (!ok).then_some(1),
            steps: vec![
                step(StepName::Connect, Verdict::Ok, "connected"),
                DiagnoseStep {
                    kind: Some(FailureKind::Tls),
                    ..step(StepName::Tls, tls, "not valid for <name>")
                },
            ],
            raw: r#"{"FederationOK": false, "x": "<b>"}"#.into(),
        }
    }

    #[test]
    fn the_failing_step_is_highlighted_and_named() {
        let html = report_html(&diagnosis(false));
        assert!(html.contains(r#"data-ok="false">Federation with <strong>a.org</strong> fails at <strong>TLS</strong>: not valid for &lt;name&gt;</p>"#), "{html}");
        assert!(html.contains(r#"<li data-step="tls" data-verdict="fail" class="failing"><strong class="failing-label">Failing step</strong> <span class="verdict verdict-fail">fail</span>"#), "{html}");
        assert!(
            html.contains(r#"<li data-step="connect" data-verdict="ok"><span"#),
            "{html}"
        );
        assert!(html.contains(r#"<details id="diagnose-raw"><summary>Raw JSON</summary><pre tabindex="0">{&quot;FederationOK&quot;: false, &quot;x&quot;: &quot;&lt;b&gt;&quot;}</pre></details>"#), "{html}");
    }

    #[test]
    fn a_working_destination_says_so() {
        let html = report_html(&diagnosis(true));
        assert!(html.contains(r#"class="notice" role="status" data-ok="true">"#));
        assert!(!html.contains("failing"));
    }
}
