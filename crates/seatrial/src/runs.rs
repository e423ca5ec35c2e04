//! `seatrial runs list|show|cancel`: the operator's terminal view of a server, through its API.

use serde_json::Value;

use crate::cli::{RunsCommand, ServerArgs};
use crate::exit::{self, Failure};

fn client() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| {
            Failure::new(
                exit::INFRASTRUCTURE,
                format!("cannot build an HTTP client: {e}"),
            )
        })
}

async fn call(
    server: &ServerArgs,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, String)],
) -> Result<Value, Failure> {
    let url = format!("{}{path}", server.server.trim_end_matches('/'));
    let mut request = client()?.request(method, &url).query(query);
    if let Some(token) = &server.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| {
        Failure::new(
            exit::INFRASTRUCTURE,
            format!("cannot reach the seatrial server at {}: {e} (is `seatrial serve` running? set --server or SEATRIAL_SERVER)", server.server),
        )
    })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let why = body["error"].as_str().unwrap_or("no detail").to_owned();
    let code = match status.as_u16() {
        400..=499 => exit::BAD_INPUT,
        _ => exit::INFRASTRUCTURE,
    };
    Err(Failure::new(code, format!("{url}: {status}: {why}")))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn duration(v: &Value) -> String {
    v.as_u64()
        .map(|ms| seatrial_engine::fmt_duration(std::time::Duration::from_millis(ms)))
        .unwrap_or_default()
}

pub async fn run(command: RunsCommand) -> Result<(), Failure> {
    match command {
        RunsCommand::List {
            server,
            recipe,
            state,
            mode,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (k, v) in [("recipe", recipe), ("state", state), ("mode", mode)] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let body = call(&server, reqwest::Method::GET, "/api/runs", &query).await?;
            if server.json {
                println!("{body:#}");
                return Ok(());
            }
            let rows: Vec<[String; 6]> = body["runs"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    let state = match r["queue_position"].as_u64() {
                        Some(p) => format!("{} (#{p})", text(&r["state"])),
                        None => text(&r["state"]),
                    };
                    [
                        text(&r["id"]),
                        text(&r["recipe"]),
                        text(&r["mode"]),
                        state,
                        duration(&r["duration_ms"]),
                        text(&r["created_at"]),
                    ]
                })
                .collect();
            if rows.is_empty() {
                eprintln!("no runs");
            } else {
                crate::table::print(
                    ["ID", "RECIPE", "MODE", "STATE", "TIME", "CREATED"],
                    &rows,
                    usize::MAX,
                );
            }
            Ok(())
        }
        RunsCommand::Show { server, id, log } => {
            let body = call(
                &server,
                reqwest::Method::GET,
                &format!("/api/runs/{id}"),
                &[],
            )
            .await?;
            let log_body = if log {
                Some(
                    call(
                        &server,
                        reqwest::Method::GET,
                        &format!("/api/runs/{id}/log"),
                        &[],
                    )
                    .await?,
                )
            } else {
                None
            };
            if server.json {
                println!("{body:#}");
                if let Some(l) = log_body {
                    println!("{l:#}");
                }
                return Ok(());
            }
            println!(
                "run {} [{}] {}: {}{}",
                text(&body["id"]),
                text(&body["mode"]),
                text(&body["state"]),
                text(&body["recipe"]),
                body["ref"]
                    .as_str()
                    .map(|r| format!(" @ {r}"))
                    .unwrap_or_default()
            );
            for key in [
                "reason",
                "stack",
                "created_at",
                "started_at",
                "finished_at",
                "queue_position",
            ] {
                let v = text(&body[key]);
                if !v.is_empty() {
                    println!("  {key}: {v}");
                }
            }
            let rows: Vec<[String; 4]> = body["stages"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    [
                        text(&s["name"]),
                        text(&s["result"]),
                        duration(&s["duration_ms"]),
                        text(&s["detail"])
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                println!();
                crate::table::print(["STAGE", "RESULT", "TIME", "DETAIL"], &rows, 100);
            }
            if let Some(l) = log_body {
                println!();
                for chunk in l["log"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    println!("{}", text(&chunk["text"]));
                }
            }
            Ok(())
        }
        RunsCommand::Cancel { server, id } => {
            let body = call(
                &server,
                reqwest::Method::POST,
                &format!("/api/runs/{id}/cancel"),
                &[],
            )
            .await?;
            if server.json {
                println!("{body:#}");
            } else if body["state"] == "cancelled" {
                println!("run {id} cancelled");
            } else {
                println!(
                    "run {id}: cancel requested ({}); its trial stops and tears down",
                    text(&body["state"])
                );
            }
            Ok(())
        }
    }
}
