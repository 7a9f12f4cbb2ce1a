//! The `herald` binary: the command line (clap) at the edge of the library.
//! `serve` runs the admin API and console (and the federation listener with
//! the key server, when configured), `user add` creates accounts,
//! `federation request` and `federation diagnose` talk to other servers,
//! `import-synapse` copies Synapse's destinations into Herald's database,
//! `migrate-store` moves a SQLite Herald store to PostgreSQL,
//! `demo` runs everything on a fresh database with realistic data.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use herald::auth::password;
use herald::config::Config;
use herald_store::Store;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Matrix federation sender with a Synapse-compatible admin API and web console"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admin API, login and console (on `listen`), and the key
    /// server on `federation_listen` when configured.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on (overrides `listen`).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Talk to other servers as this server.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// Copy Synapse's `destinations` and `destination_rooms` into Herald's
    /// database (`database` in the config), for moving to Herald's sender.
    /// Synapse's database is only read.
    ImportSynapse {
        /// Synapse's database: its SQLite file or a postgresql:// URL.
        #[arg(long)]
        from: String,
        /// Replace the destinations and rooms Herald's database already holds.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Copy every table of a SQLite Herald database into a new PostgreSQL
    /// one (keeping IDs and orderings: the sender continues where it was).
    /// Neither may be served by a running `herald serve`.
    MigrateStore {
        /// The SQLite Herald database (only read); without it, the
        /// config's `database`.
        #[arg(long)]
        from: Option<PathBuf>,
        /// The PostgreSQL database: a postgresql:// URL (created
        /// beforehand; Herald creates its tables).
        #[arg(long)]
        to: String,
        /// Replace what the PostgreSQL database already holds of Herald's.
        #[arg(long)]
        replace: bool,
        /// TOML config file, whose `database` is the default --from.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run on a fresh demo database with realistic data and a printed login.
    #[cfg(feature = "demo")]
    Demo {
        /// Directory for the demo database (recreated on every run).
        #[arg(long, default_value = "herald-data")]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8008")]
        listen: String,
        /// How many destinations to generate.
        #[arg(long, default_value_t = 240)]
        destinations: usize,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account (creating and migrating the database if needed).
    Add {
        /// The user's name (localpart), e.g. `admin`.
        name: String,
        /// The password, or `-` to read it from standard input.
        #[arg(long)]
        password: String,
        /// Make the user a server admin.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum FederationCommand {
    /// Send one signed request with this server's key and print the JSON
    /// answer (an admin's `curl` for federation).
    Request {
        /// GET, PUT, POST or DELETE.
        method: String,
        /// The destination's server name, e.g. `matrix.org` or `[::1]:8448`.
        server_name: String,
        /// Path and query, e.g. `/_matrix/federation/v1/version`.
        path: String,
        /// The JSON body.
        #[arg(long)]
        data: Option<String>,
        /// Send even while the destination is in backoff.
        #[arg(long)]
        ignore_backoff: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Diagnose a destination from this server: .well-known, SRV, the
    /// addresses and the IP filter, TCP, TLS, version and key, each step
    /// with its verdict. Exits non-zero when federation is not OK.
    Diagnose {
        /// The server name, e.g. `matrix.org` or `[::1]:8448`.
        server_name: String,
        /// Print the report as JSON (the API's body) instead of a checklist.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct Common {
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Herald's database: an SQLite file or a postgresql:// URL (overrides
    /// `database`).
    #[arg(long)]
    database: Option<PathBuf>,
}

impl Common {
    fn load(&self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(db) = &self.database {
            config.database = db.clone().into();
        }
        Ok(config)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An import's progress on standard error: one line redrawn in place on a
/// terminal, a line per table at its start and end otherwise (no progress
/// bar crate is in the offline registry; this is a dozen lines).
struct Progress {
    tty: bool,
    drawn: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            drawn: false,
        }
    }

    /// `done` of `total` rows of `table` copied.
    fn show(&mut self, table: &str, done: u64, total: u64) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let width = 30u64;
            let filled = (done * width)
                .checked_div(total)
                .unwrap_or(width)
                .min(width);
            let bar = "#".repeat(filled as usize) + &"-".repeat((width - filled) as usize);
            let _ = write!(err, "\r{table:<19} [{bar}] {done}/{total}\x1b[K");
            let _ = err.flush();
            self.drawn = true;
        } else if done == 0 || done >= total {
            let _ = writeln!(err, "{table}: {done}/{total}");
        }
    }

    fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// The error and its causes, each said once: a cause whose text its
/// immediate wrapper already ends with (as `cannot open database …:
/// {source}` does) is not repeated; any other cause is, even if its text
/// happens to appear earlier.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut wrapper: Option<String> = None;
    for cause in e.chain() {
        let cause = cause.to_string();
        let shown = wrapper.as_deref().is_some_and(|w| w.ends_with(&cause));
        if !shown {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
        wrapper = Some(cause);
    }
    text
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { common, listen } => {
            let mut config = common.load()?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            config.validate()?;
            herald::accept::raise_open_files_limit();
            // Before anything is opened: a second server on this database
            // is refused (held until this process ends).
            let serving = herald_store::claim_serving(
                &config.database.target(),
                &config.instance_name,
                herald_store::serving::CLAIM_WAIT,
            )
            .await?;
            let target = config.database.target();
            let instance = config.instance_name.clone();
            let store = match config.synapse_settings() {
                Some(synapse) => {
                    // `validate` refused a PostgreSQL `database` with `[synapse]`.
                    let herald_store::DatabaseTarget::Sqlite(own) = config.database.target() else {
                        bail!("attached mode ([synapse]) needs an SQLite `database`");
                    };
                    Store::open_attached(&own, &synapse).await?
                }
                None => Store::open_target(&config.database.target()).await?,
            };
            let listener = herald::serve::bind(config.listen_addr()?).await?;
            // The claim is kept (and taken again after a lost session) while
            // the server runs; lost to a namesake, the server stops at once.
            tokio::select! {
                served = herald::serve::run(listener, store, config) => served?,
                lost = herald_store::serving::keep_serving(serving, &target, &instance) => {
                    return Err(lost.into());
                }
            }
        }
        Command::ImportSynapse {
            from,
            replace,
            common,
        } => {
            let config = common.load()?;
            config.validate()?;
            let store = Store::open_target(&config.database.target()).await?;
            let mut shown = Progress::new();
            let counts = herald_store::import_synapse(&from, &store, replace, |p| {
                shown.show(p.table.as_str(), p.done, p.total)
            })
            .await;
            shown.finish();
            store.close().await;
            let counts = counts?;
            println!(
                "imported {} destinations and {} destination rooms into {}",
                counts.destinations,
                counts.destination_rooms,
                config.database.shown()
            );
            if let Some(max) = counts.max_stream_ordering {
                println!("Herald's next stream ordering is above {max}");
            }
        }
        Command::MigrateStore {
            from,
            to,
            replace,
            config,
        } => {
            let from = match (from, config) {
                (Some(from), _) => from,
                (None, Some(config)) => match Config::load(&config)?.database.target() {
                    herald_store::DatabaseTarget::Sqlite(path) => path,
                    herald_store::DatabaseTarget::Postgres(_) => {
                        bail!("the config's `database` is already PostgreSQL: pass --from")
                    }
                },
                (None, None) => bail!("pass --from (the SQLite database) or --config"),
            };
            let mut shown = Progress::new();
            let counts = herald_store::migrate_store(&from, &to, replace, |p| {
                shown.show(p.table, p.done, p.total)
            })
            .await;
            shown.finish();
            let counts = counts?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "copied {} into {}:",
                from.display(),
                herald_store::DatabaseTarget::parse(&to).shown()
            )?;
            for (table, rows) in &counts.tables {
                let unit = if *rows == 1 { "row" } else { "rows" };
                writeln!(out, "  {table:<19} {rows:>10} {unit}")?;
            }
            writeln!(
                out,
                "point `database` at {} and start `herald serve`",
                herald_store::DatabaseTarget::parse(&to).shown()
            )?;
        }
        Command::Federation {
            command:
                FederationCommand::Request {
                    method,
                    server_name,
                    path,
                    data,
                    ignore_backoff,
                    common,
                },
        } => {
            let config = common.load()?;
            config.validate()?;
            let answer = federation_request(
                &config,
                &method,
                &server_name,
                &path,
                data.as_deref(),
                ignore_backoff,
            )
            .await?;
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &answer)?;
            writeln!(out)?;
        }
        Command::Federation {
            command:
                FederationCommand::Diagnose {
                    server_name,
                    json,
                    common,
                },
        } => {
            let config = common.load()?;
            config.validate()?;
            let diagnoser = herald_federation::diagnose::Diagnoser::from_settings(
                &config.federation_settings(),
                config.diagnose_settings(),
            )?;
            let report = diagnoser.diagnose(&server_name).await?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                out.write_all(checklist(&report).as_bytes())?;
            }
            if !report.federation_ok {
                let failed = report
                    .failing_step()
                    .map(|s| format!(": {} failed", s.step.label()))
                    .unwrap_or_default();
                bail!("federation with {server_name} is not OK{failed}");
            }
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    password,
                    admin,
                    common,
                },
        } => {
            let config = common.load()?;
            if config.attached() {
                bail!(
                    "Herald is attached to Synapse ([synapse] in the config): admins sign in \
                     with their Synapse accounts, and Herald keeps no accounts of its own"
                );
            }
            let name = valid_localpart(&name)?;
            let password = if password == "-" {
                read_password()?
            } else {
                password
            };
            if password.is_empty() {
                bail!("the password must not be empty");
            }
            let store = Store::open_target(&config.database.target()).await?;
            let hash = tokio::task::spawn_blocking(move || password::hash(&password)).await??;
            store.users.create_user(&name, &hash, admin).await?;
            store.close().await;
            let mut out = std::io::stdout();
            writeln!(
                out,
                "created {} @{}:{} in {}",
                if admin { "admin" } else { "user" },
                name,
                config.server_name,
                config.database.shown()
            )?;
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            data_dir,
            listen,
            destinations,
        } => demo(&data_dir, &listen, destinations).await?,
    }
    Ok(())
}

/// A localpart Matrix allows (lower-cased, as Synapse stores them).
fn valid_localpart(name: &str) -> Result<String> {
    let name = name
        .strip_prefix('@')
        .map(|n| n.split(':').next().unwrap_or(n))
        .unwrap_or(name);
    let lower = name.to_lowercase();
    if lower.is_empty()
        || !lower.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        )
    {
        bail!("`{name}` is not a valid user name: use a-z, 0-9 and . _ = - / +");
    }
    Ok(lower)
}

fn read_password() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    Ok(s.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(feature = "demo")]
async fn demo(data_dir: &std::path::Path, listen: &str, count: usize) -> Result<()> {
    use herald::demo::{generator, live, tls::LoopbackCert};
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let database = data_dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", database.display()));
        if file.exists() {
            std::fs::remove_file(&file)
                .with_context(|| format!("removing the old {}", file.display()))?;
        }
    }
    herald::accept::raise_open_files_limit();
    let cert = LoopbackCert::generate(data_dir)?;
    // Herald's federation port (its name): a free one on loopback.
    let federation = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the federation listener")?;
    let sender_token = herald::auth::token::password();
    let peers = live::Federation::start(&cert, data_dir).await?;
    let config = live::config(&database, listen, federation, &cert, &peers, &sender_token);
    config.validate()?;
    let store = Store::open(&database).await?;
    herald::demo::seed(&store, count).await?;
    let admin_password = herald::auth::token::password();
    let pw = admin_password.clone();
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw)).await??;
    store.users.create_user("admin", &hash, true).await?;
    let listener = herald::serve::bind(config.listen_addr()?).await?;
    let addr = listener.local_addr()?;
    let origin = config.server_name.clone();
    let server = herald::serve::Server::prepare(listener, store, config).await?;
    let rooms = generator::rooms(&origin, &peers.names());
    tokio::spawn(generator::run(
        addr,
        sender_token,
        origin.clone(),
        rooms,
        3.0,
    ));
    let mut out = std::io::stdout();
    writeln!(
        out,
        "\nHerald demo: {count} destinations in {}, and a live federation on 127.0.0.1\n\n  Open   http://{addr}/\n  User   admin\n  Pass   {admin_password}\n\nHerald sends as {origin}; about 3 events a second go to these simulated homeservers:",
        database.display()
    )?;
    for (what, hs) in &peers.homeservers {
        writeln!(out, "  {:<17} {what}", hs.name())?;
    }
    writeln!(
        out,
        "Retry intervals are short (5 s doubling to 1 min; catch-up after 30 s).\n\nPress Ctrl-C to stop.\n"
    )?;
    out.flush()?;
    server.run().await?;
    Ok(())
}

/// `herald federation diagnose`'s text: one line a step, the failing one
/// marked.
fn checklist(report: &herald_shared::DiagnoseReport) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "Diagnosis of {} ({} ms): federation {}\n",
        report.server_name,
        report.duration_ms,
        if report.federation_ok { "OK" } else { "FAILS" }
    );
    for (i, step) in report.steps.iter().enumerate() {
        let mark = if report.failed_step == Some(i) {
            "=>"
        } else {
            "  "
        };
        let what = match &step.address {
            Some(a) => format!("{} {a}", step.step.label()),
            None => step.step.label().to_owned(),
        };
        let _ = writeln!(
            text,
            "{mark} [{:<7}] {what:<40} {:>6} ms  {}",
            step.verdict.as_str(),
            step.duration_ms,
            step.message
        );
    }
    text
}

/// `herald federation request`: one signed request, its JSON answer.
async fn federation_request(
    config: &Config,
    method: &str,
    server_name: &str,
    path: &str,
    data: Option<&str>,
    ignore_backoff: bool,
) -> Result<serde_json::Value> {
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => axum::http::Method::GET,
        "PUT" => axum::http::Method::PUT,
        "POST" => axum::http::Method::POST,
        "DELETE" => axum::http::Method::DELETE,
        other => bail!("unsupported method {other:?}: use GET, PUT, POST or DELETE"),
    };
    if !path.starts_with('/') {
        bail!("the path must start with '/', e.g. /_matrix/federation/v1/version");
    }
    let body: Option<serde_json::Value> = data
        .map(serde_json::from_str)
        .transpose()
        .context("--data is not JSON")?;
    let store = Store::open_target(&config.database.target()).await?;
    let keys = herald_keys::ServerKeys::load(
        &config.server_name,
        &config.signing_key_path(),
        &config.old_signing_keys,
    )?;
    let client = herald_federation::FederationClient::from_settings(
        &config.federation_settings(),
        store.destinations.clone(),
        std::sync::Arc::new(keys),
    )?;
    let options = herald_federation::client::RequestOptions {
        ignore_backoff,
        ..Default::default()
    };
    client
        .request_json(method, server_name, path, body.as_ref(), options)
        .await
        .with_context(|| format!("federation request to {server_name} failed"))
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Wrapper {
        text: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_is_dropped_only_when_its_wrapper_ends_with_it() {
        let io = || std::io::Error::other("locked");
        // The wrapper shows its source: said once.
        let e = anyhow::Error::new(Wrapper {
            text: "cannot open database x: locked".into(),
            source: io(),
        });
        assert_eq!(error_chain(&e), "cannot open database x: locked");
        // The cause's text appears in the wrapper, but not as its end:
        // still said.
        let e = anyhow::Error::new(Wrapper {
            text: "database locked by another process".into(),
            source: io(),
        });
        assert_eq!(
            error_chain(&e),
            "database locked by another process: locked"
        );
        // A context above: each level compared with its own wrapper.
        let e = anyhow::Error::new(Wrapper {
            text: "migrating: locked".into(),
            source: io(),
        })
        .context("locked");
        assert_eq!(error_chain(&e), "locked: migrating: locked");
    }
}
