//! `rds`: the command-line client of the run-dat-sheesh manager. Exit codes: 0 ok, 1 API error
//! (4xx) or local usage error, 2 bad command line, 3 connection error, 5xx, or a streamed call that
//! ended without its exit; `exec`, `run-ts` and `run-js` (streamed unless `--json`) exit with the
//! command's own code.

mod args;
mod client;
mod cmd;
mod files;
mod output;
mod profile;
mod progress;
mod stream;

use args::{Cli, Cmd};
use clap::{CommandFactory, Parser};
use client::{Auth, Client, Failure};
use serde_json::{json, Value};

/// How results are printed: `--json` gives the API's document, otherwise human text.
pub struct Out {
    pub json: bool,
}

impl Out {
    pub fn show(&self, v: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{v}");
        } else {
            print!("{}", human());
        }
    }

    /// For answers without a body: `{"ok":true,"id":…}` under --json, else `<id> <what>`.
    pub fn done(&self, id: &str, what: &str) {
        if self.json {
            println!("{}", json!({"ok": true, "id": id}));
        } else {
            println!("{id} {what}");
        }
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // clap's report spans several lines; scripts and logs get its first paragraph.
            let text = e.render().to_string();
            let head: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see --help)", head.join(" "));
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", client::one_line(&f.msg));
            f.code
        }
    };
    std::process::exit(code);
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

async fn dispatch(cli: Cli) -> Result<i32, Failure> {
    let out = Out { json: cli.json };
    if let Cmd::Completions { shell } = cli.cmd {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "rds", &mut script);
        // A closed pipe (`| head`) is the reader's choice, not an error.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        return Ok(0);
    }
    let saved = profile::load();
    let url = nonempty(cli.url)
        .or_else(|| saved.url.clone())
        .ok_or_else(|| {
            Failure::usage("no manager URL: pass --url, set RDS_URL or run rds login")
        })?;
    let flag_key = nonempty(cli.api_key);
    match cli.cmd {
        Cmd::Login(a) => {
            return cmd::admin::login(&url, flag_key, a.email, saved)
                .await
                .map(|_| 0)
        }
        Cmd::Logout => return cmd::admin::logout(&url, saved).await.map(|_| 0),
        _ => {}
    }
    let session_only = matches!(cli.cmd, Cmd::Keys(_) | Cmd::Webhooks(_));
    let auth = if session_only {
        match (saved.session.clone(), saved.csrf_token.clone()) {
            (Some(cookie), Some(csrf)) => Auth::Session { cookie, csrf },
            _ => {
                return Err(Failure::usage(
                    "this command needs an admin session: run rds login --email <admin email>",
                ))
            }
        }
    } else {
        Auth::Key(flag_key.or(saved.api_key.clone()))
    };
    let c = Client::new(&url, auth)?;
    match cli.cmd {
        Cmd::Vm(v) => cmd::vm::run(&c, &out, v).await?,
        Cmd::Exec(a) => return cmd::vm::exec(&c, &out, a).await,
        Cmd::RunTs(a) => return cmd::vm::run_code(&c, &out, a, "run-ts").await,
        Cmd::RunJs(a) => return cmd::vm::run_code(&c, &out, a, "run-js").await,
        Cmd::Cp { src, dst } => files::cp(&c, &src, &dst, out.json).await?,
        Cmd::Logs { id, kind, tail } => cmd::vm::logs(&c, &out, &id, kind, tail).await?,
        Cmd::ExecLogs { id, kind, limit } => cmd::vm::exec_logs(&c, &out, &id, kind, limit).await?,
        Cmd::Image(i) => cmd::image::image(&c, &out, i).await?,
        Cmd::Snapshot(s) => cmd::image::snapshot(&c, &out, s).await?,
        Cmd::Keys(k) => cmd::admin::keys(&c, &out, k).await?,
        Cmd::Webhooks(w) => cmd::admin::webhooks(&c, &out, w).await?,
        Cmd::Login(_) | Cmd::Logout | Cmd::Completions { .. } => unreachable!("handled above"),
    }
    Ok(0)
}
