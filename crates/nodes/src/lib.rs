#![forbid(unsafe_code)]
//! Start and stop real PostgreSQL and Redis server processes.
//!
//! Used by the test harness (`testkit`) and by `millions up`, which starts a
//! local stack detached. Servers started here run in their own process group
//! and outlive the process that started them: stop them explicitly
//! ([`stop_postgres`], [`stop_pid`]).

mod error;
mod postgres;
mod process;
mod redis;

pub use error::{Error, LogTail};
pub use postgres::{
    ControlData, Durability, PostgresSpec, StopMode, base_backup, controldata, init_postgres, parse_lsn,
    pg_bin, postgres_running, postgres_url, postmaster_pid, promote_postgres, reload_postgres,
    rewind_postgres, running_postmaster, standby_conf, start_postgres, stop_postgres,
};
pub use process::{
    ProcessId, free_port, log_tail, pid_alive, process_start_time, random_secret, read_pid_file, stop_pid,
    stop_process, wait_tcp, write_pid_file,
};
pub use redis::{RedisSpec, redis_command, redis_ping, redis_server_bin, start_redis};
