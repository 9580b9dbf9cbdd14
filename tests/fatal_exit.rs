//! Every fatal error ends the process with a non-zero exit; nothing hangs. A port that is already
//! taken is the simplest fatal error an SRE meets: each binary must say so and exit at once.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use omnistream_testkit::{ServiceProcess, workspace_binary};

/// Starts `binary` with `env`, waits up to 30 s for it to exit, and returns its exit code and log.
fn exit_of(binary: &str, label: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut process = ServiceProcess::spawn(&workspace_binary(binary), label, &[], env);
    let started = Instant::now();
    while process.is_running() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{binary} still runs 30 s after failing to bind; see {}",
            process.log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(&process.log).unwrap_or_default();
    (process.exit_code(), log)
}

#[test]
fn every_binary_exits_non_zero_when_its_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let free = || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let mut cases: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
    for service in ["profile-updater", "suppression", "channel-affinity", "loyalty-points"] {
        cases.push((service, vec![("ADMIN_ADDR", taken.clone())]));
    }
    for http in ["ingest-gateway", "customer-api"] {
        cases.push((http, vec![("ADMIN_ADDR", taken.clone()), ("HTTP_ADDR", free())]));
        cases.push((http, vec![("ADMIN_ADDR", free()), ("HTTP_ADDR", taken.clone())]));
    }
    for (index, (binary, env)) in cases.iter().enumerate() {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, log) = exit_of(binary, &format!("port-taken-{binary}-{index}"), &env);
        assert!(matches!(code, Some(code) if code != 0), "{binary} {env:?}: exit {code:?}\n{log}");
        assert!(log.contains(&taken), "{binary} {env:?}: the log names the taken address\n{log}");
    }
}
