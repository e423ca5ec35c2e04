//! Progress while waiting: a spinner line on a terminal, plain lines (only on change) otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use seatrial_engine::{ConvergeProgress, ProgressObserver, UndeployRemaining, fmt_duration};

pub struct Reporter {
    bar: Option<ProgressBar>,
    last_line: Mutex<String>,
}

impl Reporter {
    pub fn new(prefix: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(prefix.to_owned());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self {
            bar,
            last_line: Mutex::new(String::new()),
        }
    }

    fn show(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if *last != line {
                    eprintln!("  {line}");
                    *last = line;
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The part of a service name after the stack prefix.
fn short(name: &str) -> &str {
    name.split_once('_').map_or(name, |(_, s)| s)
}

impl ProgressObserver for Reporter {
    fn converge(&self, p: &ConvergeProgress) {
        let services: Vec<String> = p
            .services
            .iter()
            .map(|s| {
                let mut part = format!("{} {}/{}", short(&s.name), s.running, s.desired);
                if let Some(state) = s.update_state.as_deref().filter(|u| *u != "completed") {
                    part.push_str(&format!(" ({state})"));
                }
                if !s.converged && s.failed_tasks > 0 {
                    part.push_str(&format!(" [{} failed]", s.failed_tasks));
                }
                part
            })
            .collect();
        let line = match p.stabilizing {
            Some(left) => format!(
                "all services up; checking they stay up ({} left): {}",
                fmt_duration(left),
                services.join(", ")
            ),
            None => format!("waiting for {}", services.join(", ")),
        };
        // Plain output prints on change only, so leave the ticking countdown out of it.
        if self.bar.is_none() && p.stabilizing.is_some() {
            self.show(format!(
                "all services up; checking they stay up: {}",
                services.join(", ")
            ));
        } else {
            self.show(line);
        }
    }

    fn undeploy(&self, r: &UndeployRemaining) {
        let mut parts = Vec::new();
        for (n, what) in [
            (r.services, "service"),
            (r.containers, "container"),
            (r.remote_tasks, "task on another node"),
            (r.networks, "network"),
            (r.volumes, "volume"),
            (r.secrets, "secret"),
            (r.configs, "config"),
        ] {
            if n > 0 {
                parts.push(plural(n, what));
            }
        }
        if parts.is_empty() {
            self.show("all gone".into());
        } else {
            self.show(format!("waiting until gone: {}", parts.join(", ")));
        }
    }
}

/// `1 service`, `2 services`, `2 tasks on other nodes`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        return format!("{n} {what}");
    }
    match what.split_once(' ') {
        Some((noun, rest)) => format!(
            "{n} {noun}s {}",
            rest.replace("another node", "other nodes")
        ),
        None => format!("{n} {what}s"),
    }
}
