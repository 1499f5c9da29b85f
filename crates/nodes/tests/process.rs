//! Pid files that name a process by pid and start time: a pid reused by an
//! unrelated process is never adopted nor signalled.

use std::process::{Child, Command};
use std::time::Duration;

use nodes::{ProcessId, pid_alive, read_pid_file, stop_process, write_pid_file};

/// An unrelated process, killed when the test ends.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(Command::new("sleep").arg("600").spawn().expect("running sleep"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_pid_file_names_only_the_process_that_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes").join("x.pid");
    let mut sleeper = Sleeper::start();
    let me = ProcessId::of(sleeper.pid()).expect("a running process has a start time");
    write_pid_file(&path, me).unwrap();
    assert_eq!(read_pid_file(&path), Some(me));

    // Its pid with another start time (the pid reused), or with none (a file
    // of an older format or written by hand): not that process.
    for text in [format!("{} {}\n", me.pid, me.start + 1), format!("{}\n", me.pid), "garbage".into()] {
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_pid_file(&path), None, "{text:?}");
    }
    let impostor = ProcessId { pid: me.pid, start: me.start + 1 };
    assert!(!impostor.alive());
    stop_process(impostor, Duration::ZERO).unwrap();
    assert!(sleeper.running(), "a process with another start time was signalled");

    // The process itself is stopped, and its file then names nothing.
    write_pid_file(&path, me).unwrap();
    stop_process(me, Duration::from_secs(5)).unwrap();
    assert!(!pid_alive(me.pid));
    assert_eq!(read_pid_file(&path), None);
    assert_eq!(ProcessId::of(me.pid), None);
}
