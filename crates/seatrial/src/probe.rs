//! `seatrial probe URL`: one GET, exit 0 when the answer has the expected status. seatrial's
//! image is built from scratch (no shell, no curl), so its `HEALTHCHECK` and the recipe's
//! healthcheck use this.

use crate::cli::ProbeArgs;
use crate::exit::{APP_FAILED, BAD_INPUT, Failure};

pub async fn run(args: &ProbeArgs) -> Result<(), Failure> {
    let url = reqwest::Url::parse(&args.url).map_err(|e| {
        Failure::new(
            BAD_INPUT,
            format!(
                "{:?} is not a URL ({e}); give one like http://127.0.0.1:8086/healthz",
                args.url
            ),
        )
    })?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(args.timeout)
        .build()
        .map_err(|e| Failure::new(APP_FAILED, format!("cannot build an HTTP client: {e}")))?;
    let answer = client.get(url.clone()).send().await.map_err(|e| {
        let why = if e.is_timeout() {
            format!(
                "no answer within {}",
                seatrial_engine::fmt_duration(args.timeout)
            )
        } else {
            // The source chain says why (refused, unresolvable name, TLS).
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            why
        };
        Failure::new(APP_FAILED, format!("{url}: {why}"))
    })?;
    let status = answer.status().as_u16();
    if status == args.status {
        println!("{url}: {status}");
        Ok(())
    } else {
        Err(Failure::new(
            APP_FAILED,
            format!("{url} answered {status}, not {}", args.status),
        ))
    }
}
