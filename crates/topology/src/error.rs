//! Everything that can be wrong with a topology.

use std::net::SocketAddr;

use crate::{PRESETS, Role};

/// A topology that cannot run, or a node that cannot bind its address.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology {path}: {source}")]
    Read {
        /// The file, as given.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The text is not TOML, or not of this format: a syntax error, an unknown or
    /// missing key (an unknown role is an unknown key), a value of the wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// Where the text came from (a path, or `preset "default"`).
        origin: String,
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// The text is well-formed but describes a topology that cannot run.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where the text came from (a path, or `preset "default"`).
        origin: String,
        /// What is wrong, starting with where (`dc[1] (dc2): …`, `shard 0: …`).
        message: String,
    },
    /// A topology file's text could not be edited as asked ([`crate::set_count`]).
    #[error("cannot set {role}.count of DC \"{dc}\": {reason}")]
    Edit {
        /// The DC whose section was to change.
        dc: String,
        /// The role whose count was to change.
        role: Role,
        /// Why not: the text is not TOML, no such DC, a role that does not scale, no
        /// section for the role.
        reason: String,
    },
    /// No preset has this name.
    #[error("unknown preset \"{name}\"; the presets are: {}", PRESETS.join(", "))]
    UnknownPreset {
        /// The name asked for.
        name: String,
    },
    /// Another process listens on a node's address and port.
    #[error("{node} cannot listen on {addr}: port {} is already in use on {}", addr.port(), addr.ip())]
    PortInUse {
        /// The node that would have bound it.
        node: String,
        /// The address and port.
        addr: SocketAddr,
    },
    /// A node's address cannot be bound for another reason (not an address of this
    /// machine, not permitted, ...).
    #[error("{node} cannot listen on {addr}: {source}")]
    CannotBind {
        /// The node that would have bound it.
        node: String,
        /// The address and port.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
}
