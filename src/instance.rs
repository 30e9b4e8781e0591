//! Who this process is among the instances sharing a database: the name recorded on
//! every claim (`worker` in `deliveries --json`), and whether the process behind such a
//! name is gone.

use anyhow::bail;

/// `host:pid`: unique among running processes, and telling which host to look on.
pub fn default_name() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// A name given by the operator: printable, no spaces, at most 100 bytes.
pub fn checked_name(name: &str) -> anyhow::Result<String> {
    if name.len() > 100 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the instance name '{}' must be at most 100 printable characters without spaces", name.escape_debug());
    }
    Ok(name.to_owned())
}

/// This host's name (`localhost` when the system will not say).
pub fn hostname() -> String {
    let name = rustix::system::uname().nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// Whether the claims recorded under `worker` were left by a process that no longer
/// runs, as seen by `me` at its start: a previous run under my own name, or a `host:pid`
/// of this host whose process has exited. A name this cannot judge (another host, a
/// name without a pid) is not gone: its lease says when its work is free.
pub fn is_gone(worker: &str, me: &str) -> bool {
    if worker == me {
        return true;
    }
    let Some((host, pid)) = worker.rsplit_once(':') else { return false };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    pid > 0 && pid != std::process::id() as i32 && host == hostname() && !process_runs(pid)
}

/// Signal 0: nothing is sent, the answer says whether the process exists (one of
/// another user that we may not signal exists too).
fn process_runs(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else { return false };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_process_of_this_host_is_gone_and_others_are_not_judged() {
        let me = default_name();
        assert!(me.starts_with(&hostname()) && me.ends_with(&format!(":{}", std::process::id())));
        assert!(is_gone(&me, &me), "a previous run under my own name");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(is_gone(&format!("{}:{pid}", hostname()), &me), "an exited process of this host");
        let parent = format!("{}:{}", hostname(), std::os::unix::process::parent_id());
        assert!(!is_gone(&parent, &me), "a running process");
        assert!(!is_gone(&format!("other-host.example:{pid}"), &me), "another host");
        assert!(!is_gone("worker-a", &me) && !is_gone("local", &me), "no pid to check");
        assert!(checked_name("db 1").is_err() && checked_name("eu-1").is_ok());
    }
}
