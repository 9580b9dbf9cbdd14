//! Every fatal error ends the process with a non-zero exit; nothing hangs. A port that is already
//! taken is the simplest fatal error an SRE meets: each binary must say so and exit at once. A
//! clean stop that cannot finish ends at its grace period, or at once on a second signal.

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

/// A clean stop that cannot finish (no broker: the transactional producer waits for a
/// coordinator) ends at the grace period with code 1, or at once with code 143 on a second SIGTERM.
#[test]
fn a_stop_that_cannot_finish_ends_at_its_grace_period_or_at_a_second_signal() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    // (second signal after, expected exit code, earliest and latest exit after the first signal)
    let cases = [
        (None, 1, Duration::from_secs(2), Duration::from_secs(6)),
        (Some(Duration::from_millis(300)), 143, Duration::from_millis(300), Duration::from_millis(1_500)),
    ];
    for (index, (second_signal, expected, earliest, latest)) in cases.into_iter().enumerate() {
        let admin = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let mut process = ServiceProcess::spawn(
            &workspace_binary("suppression"),
            &format!("shutdown-grace-{index}"),
            &["--bootstrap-servers", &closed],
            &[("ADMIN_ADDR", &admin), ("SHUTDOWN_GRACE_SECONDS", "2"), ("TRANSACTION_TIMEOUT_MS", "120000")],
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(&admin).is_err() {
            assert!(process.is_running(), "exited before the signal; see {}", process.log.display());
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no admin server; see {}",
                process.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(process.is_running(), "exited before the signal; see {}", process.log.display());
        let signalled = Instant::now();
        process.send_sigterm();
        if let Some(after) = second_signal {
            std::thread::sleep(after);
            // Two signals that arrive before the first is handled count as one.
            while !std::fs::read_to_string(&process.log).unwrap_or_default().contains("SIGTERM: stopping") {
                assert!(
                    signalled.elapsed() < Duration::from_secs(5),
                    "no stop logged; see {}",
                    process.log.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            process.send_sigterm();
        }
        while process.is_running() {
            assert!(
                signalled.elapsed() < Duration::from_secs(10),
                "still running; see {}",
                process.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = signalled.elapsed();
        let log = std::fs::read_to_string(&process.log).unwrap_or_default();
        assert_eq!(process.exit_code(), Some(expected), "case {index}\n{log}");
        assert!(earliest <= took && took < latest, "case {index}: exited {took:?} after SIGTERM\n{log}");
        let why = if second_signal.is_some() { "a second signal" } else { "outlasted its grace period" };
        assert!(log.contains(why), "case {index}: the log says why\n{log}");
    }
}
