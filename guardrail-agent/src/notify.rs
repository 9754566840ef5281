//! systemd's readiness protocol (`sd_notify`): a `Type=notify` unit is
//! started only once the agent says `READY=1`, that is once its probes are
//! attached and its rules are in force. Outside systemd
//! (`NOTIFY_SOCKET` unset) this does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// How long one start-up step (reading the kernel's BTF, the verifier on
/// one program, putting the rules in force) may take before systemd
/// gives up on the start. A step is well under a second on real hardware,
/// but the verifier's cost is CPU time: on a starved or emulated CPU the
/// whole start takes minutes, and a fixed start timeout would kill an
/// agent that is making progress (while the pinned state enforces). A
/// step that hangs still fails the start.
pub const START_STEP: Duration = Duration::from_secs(120);

/// Send `state` (e.g. `READY=1`) to the service manager, if there is one.
pub fn notify(state: &str) -> std::io::Result<()> {
    send(state, true)
}

/// `wait`: block while the manager's queue is full (readiness must
/// arrive); else drop the message (a start-up step is advisory, and a
/// manager that does not read must not stall the start).
fn send(state: &str, wait: bool) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let bytes = path.as_encoded_bytes();
    // `@name` is a socket in the abstract namespace.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(!wait)?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Start-up reached `step`: systemd shows it in `systemctl status` and
/// extends the start timeout by [`START_STEP`] from now.
pub fn starting(step: &str) {
    let _ = send(&start_step_message(step), false);
}

fn start_step_message(step: &str) -> String {
    format!(
        "EXTEND_TIMEOUT_USEC={}\nSTATUS=starting: {step}",
        START_STEP.as_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_the_socket_named_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        // The variable is process-wide; this is the only test that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1").unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        // Without a service manager, nothing is sent and nothing fails.
        notify("READY=1").unwrap();
    }

    #[test]
    fn a_start_step_extends_the_start_timeout_and_names_the_step() {
        assert_eq!(
            start_step_message("verifying guardrail_sys_exit"),
            "EXTEND_TIMEOUT_USEC=120000000\nSTATUS=starting: verifying guardrail_sys_exit"
        );
    }
}
