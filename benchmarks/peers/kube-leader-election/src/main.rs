//! Benchmark peer driving the `kube-leader-election` crate (LeaseLock) the way
//! its README and examples/shared-lease.rs show: call `try_acquire_or_renew()`
//! in a loop, sleeping `--retry-period` between calls, and treat
//! `LeaseLockResult::Acquired` as "leading". `step_down()` on SIGTERM/SIGINT.
//!
//! Protocol: JSON lines on stdout ({"event": ..., "t": CLOCK_MONOTONIC s}),
//! diagnostics on stderr. See README.md.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use tokio::signal::unix::{signal, SignalKind};

fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn emit(event: &str) {
    let line = serde_json::json!({ "event": event, "t": monotonic() }).to_string();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn log(msg: &str) {
    eprintln!("[kle-peer t={:.3}] {msg}", monotonic());
}

struct Args {
    kubeconfig: String,
    namespace: String,
    lease: String,
    identity: String,
    lease_duration: f64,
    renew_deadline: f64,
    retry_period: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut m = std::collections::HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let (k, v) = match k.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (k.clone(), it.next().ok_or(format!("missing value for {k}"))?),
        };
        let k = k.strip_prefix("--").ok_or(format!("unexpected argument {k}"))?.to_string();
        m.insert(k, v);
    }
    let s = |k: &str| m.get(k).cloned().ok_or(format!("--{k} is required"));
    let f = |k: &str| -> Result<f64, String> {
        s(k)?.parse::<f64>().map_err(|e| format!("--{k}: {e}"))
    };
    Ok(Args {
        kubeconfig: s("kubeconfig")?,
        namespace: s("namespace")?,
        lease: s("lease")?,
        identity: s("identity")?,
        lease_duration: f("lease-duration")?,
        renew_deadline: f("renew-deadline")?,
        retry_period: f("retry-period")?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("usage: peer --kubeconfig PATH --namespace NS --lease NAME --identity ID \
                       --lease-duration S --renew-deadline S --retry-period S\nerror: {e}");
            return ExitCode::from(2);
        }
    };
    // Registered before anything else so that a SIGTERM arriving while a
    // request is in flight is not lost (it is seen at the next select).
    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");

    let client = loop {
        // Kubeconfig file -> kube::Config -> kube::Client. Retried: peers must not crash.
        let res = async {
            let kc = Kubeconfig::read_from(&args.kubeconfig).map_err(|e| e.to_string())?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            kube::Client::try_from(cfg).map_err(|e| e.to_string())
        }
        .await;
        match res {
            Ok(c) => break c,
            Err(e) => {
                log(&format!("building client from {} failed: {e}", args.kubeconfig));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(args.retry_period)) => {}
                    _ = sigterm.recv() => { emit("exit"); return ExitCode::SUCCESS; }
                    _ = sigint.recv() => { emit("exit"); return ExitCode::SUCCESS; }
                }
            }
        }
    };

    // The crate has one timing parameter, lease_ttl (whole seconds on the
    // Lease: leaseDurationSeconds = lease_ttl.as_secs()). renew-deadline has no
    // counterpart; retry-period is the sleep between calls, as in the examples.
    let _ = args.renew_deadline;
    let leadership = LeaseLock::new(
        client,
        &args.namespace,
        LeaseLockParams {
            holder_id: args.identity.clone(),
            lease_name: args.lease.clone(),
            lease_ttl: Duration::from_secs_f64(args.lease_duration),
        },
    );

    emit("ready");
    let mut leading = false;
    loop {
        match leadership.try_acquire_or_renew().await {
            Ok(res) => {
                let now_leading = matches!(res, LeaseLockResult::Acquired(_));
                if now_leading && !leading {
                    emit("started");
                } else if !now_leading && leading {
                    emit("stopped");
                }
                leading = now_leading;
            }
            // As in examples/shared-lease.rs: log the error, keep the last state.
            Err(e) => log(&format!("try_acquire_or_renew: {e}")),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(args.retry_period)) => {}
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    // Graceful shutdown: guarded work stops first, then the lease is released.
    if leading {
        emit("stopped");
        match leadership.step_down().await {
            Ok(()) => log("step_down: released the lease"),
            Err(e) => log(&format!("step_down: {e}")),
        }
    }
    emit("exit");
    ExitCode::SUCCESS
}
